package optimizer

// Plan is a solution of a Problem: a tree of arcs directed away from the root,
// the transcodes each node runs and the level each demand is served at.
type Plan struct {
	Algorithm  string      `json:"algorithm"`
	Arcs       []Arc       `json:"arcs"`
	Transcodes []Transcode `json:"transcodes"`
	Served     []Service   `json:"served"`
	Cost       *Cost       `json:"cost,omitempty"`
}

// Arc carries Levels from node From to node To over a link of the problem.
type Arc struct {
	From   string   `json:"from"`
	To     string   `json:"to"`
	Levels []string `json:"levels"`
}

// Transcode makes Node produce level To from level From.
type Transcode struct {
	Node string `json:"node"`
	From string `json:"from"`
	To   string `json:"to"`
}

// Service serves demand number Demand (its index in Problem.Demands) at Level.
type Service struct {
	Demand int    `json:"demand"`
	Level  string `json:"level"`
}

// Cost is a plan's cost block. Total = Links + Transcodes + LastMile − Utility
// and Regret = Total + Problem.MaxUtility.
type Cost struct {
	Links      float64 `json:"links"`
	Transcodes float64 `json:"transcodes"`
	LastMile   float64 `json:"last_mile"`
	Utility    float64 `json:"utility"`
	Total      float64 `json:"total"`
	Regret     float64 `json:"regret"`
}
