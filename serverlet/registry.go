package serverlet

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode"
)

// Constructor makes a serverlet from its parameters as written in the
// config ("scale 640x360 800k" → Args{"640x360", "800k"}). Plugins export
// one under the name New.
type Constructor func(args Args) (Serverlet, error)

// Args are a serverlet's parameters: positional words and key=value pairs,
// in the order the config gives them.
type Args []string

// Positional returns the arguments without '='.
func (a Args) Positional() []string {
	var out []string
	for _, s := range a {
		if !strings.Contains(s, "=") {
			out = append(out, s)
		}
	}
	return out
}

// Get returns the value of key=value; the last one wins.
func (a Args) Get(key string) (string, bool) {
	v, ok := "", false
	for _, s := range a {
		if k, val, found := strings.Cut(s, "="); found && k == key {
			v, ok = val, true
		}
	}
	return v, ok
}

// builtins is filled by the built-in serverlets' init functions.
var (
	builtinsMu sync.Mutex
	builtins   = map[string]Constructor{}
)

// RegisterBuiltin adds a constructor that every Registry made afterwards
// by NewRegistry starts with. It panics on a duplicate name, as
// http.Handle does, because it runs at init.
func RegisterBuiltin(name string, c Constructor) {
	builtinsMu.Lock()
	defer builtinsMu.Unlock()
	if err := checkName(name); err != nil {
		panic(err)
	}
	if _, dup := builtins[name]; dup {
		panic(fmt.Sprintf("serverlet: builtin %q registered twice", name))
	}
	builtins[name] = c
}

// Registry maps serverlet names to constructors. Each Manager has its own,
// so that two nodes in one process load plugins independently.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Constructor
}

// NewRegistry returns a registry holding the built-in serverlets.
func NewRegistry() *Registry {
	builtinsMu.Lock()
	defer builtinsMu.Unlock()
	r := &Registry{m: make(map[string]Constructor, len(builtins))}
	for k, v := range builtins {
		r.m[k] = v
	}
	return r
}

// Register adds a constructor under name; a name taken already is an error.
func (r *Registry) Register(name string, c Constructor) error {
	if err := checkName(name); err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("serverlet %q: nil constructor", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[name]; dup {
		return fmt.Errorf("serverlet %q: already registered", name)
	}
	r.m[name] = c
	return nil
}

// Lookup returns the constructor registered under name.
func (r *Registry) Lookup(name string) (Constructor, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.m[name]
	return c, ok
}

// Names lists the registered serverlets, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for k := range r.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Parse builds the serverlet a spec describes: a serverlet name with its
// arguments, several joined by '|' to chain them, e.g.
// "scale x360 800k | annotate text='LIVE' x=10 y=10". Quotes (' or ")
// group words.
func (r *Registry) Parse(spec string) (Serverlet, error) {
	words, err := splitWords(spec)
	if err != nil {
		return nil, fmt.Errorf("serverlet spec %q: %w", spec, err)
	}
	var chain Chain
	var cur []string
	flush := func() error {
		if len(cur) == 0 {
			return errors.New("empty serverlet in chain")
		}
		c, ok := r.Lookup(cur[0])
		if !ok {
			return fmt.Errorf("unknown serverlet %q (known: %s)", cur[0], strings.Join(r.Names(), ", "))
		}
		s, err := construct(c, Args(cur[1:]))
		if err != nil {
			return fmt.Errorf("%s: %w", cur[0], err)
		}
		if s == nil {
			return fmt.Errorf("%s: constructor returned no serverlet", cur[0])
		}
		chain = append(chain, s)
		cur = nil
		return nil
	}
	for _, w := range words {
		if w == "|" {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("serverlet spec %q: %w", spec, err)
			}
			continue
		}
		cur = append(cur, w)
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("serverlet spec %q: %w", spec, err)
	}
	if len(chain) == 1 {
		return chain[0], nil
	}
	return chain, nil
}

// construct calls c, turning a panic (an operator's plugin) into an error.
func construct(c Constructor, a Args) (s Serverlet, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("constructor panicked: %v", r)
		}
	}()
	return c(a)
}

// splitWords splits on spaces outside quotes; '|' outside quotes is a word
// of its own.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, c := range s {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '|':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			words = append(words, "|")
		case unicode.IsSpace(c):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, " \t|@/'\"=") {
		return fmt.Errorf("serverlet name %q: must be non-empty without spaces, '|', '@', '/', quotes or '='", name)
	}
	return nil
}
