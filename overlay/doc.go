// Package overlay joins a node to the Gradient cluster: membership and node
// metadata over gossip (hashicorp/memberlist), and, as the overlay grows,
// link costs, gossip of streams and demand, plan distribution and relays.
package overlay
