package overlay

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// eventDelegate is memberlist's EventDelegate for a Membership: it keeps
// the member table.
type eventDelegate struct{ m *Membership }

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

// NotifyJoin implements memberlist.EventDelegate.
func (d *eventDelegate) NotifyJoin(n *memberlist.Node) {
	m := d.m
	mem := memberOf(n)
	m.mu.Lock()
	m.alive[n.Name] = true
	m.nodes[n.Name] = mem
	m.lastAck[n.Name] = time.Now()
	delete(m.gone, n.Name)
	m.mu.Unlock()
	m.log.Info("node joined", "node", n.Name, "addr", n.Address())
	m.changed()
}

// NotifyLeave implements memberlist.EventDelegate: a node that left or was
// declared dead; its streams, demand, plans and RTTs are forgotten.
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	m.mu.Lock()
	if n.Name != m.cfg.Name {
		if mem, ok := m.nodes[n.Name]; ok {
			// memberlist does not tell a leave from a death here
			// (Node.State stays alive); the metadata of a node that closed
			// says it was leaving.
			mem.State, mem.Since = "dead", time.Now()
			if mem.Meta.Leaving {
				mem.State = "left"
			}
			m.gone[n.Name] = mem
		}
		delete(m.alive, n.Name)
		delete(m.nodes, n.Name)
		delete(m.lastAck, n.Name)
	}
	delete(m.rtt, n.Name)
	delete(m.rttSamples, n.Name)
	m.mu.Unlock()
	dropped := m.state.forgetOwner(n.Name)
	m.log.Info("node gone", "node", n.Name, "addr", n.Address(), "entries_forgotten", dropped)
	m.changed()
}

// NotifyUpdate implements memberlist.EventDelegate.
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	m := d.m
	mem := memberOf(n)
	m.mu.Lock()
	m.nodes[n.Name] = mem
	m.mu.Unlock()
	m.log.Debug("node updated", "node", n.Name)
	m.changed()
}
