package client

import (
	"bytes"

	pb "github.com/raftwatch/raftwatch/proto"
)

// position is how far a watch has brought its consumer: what a resumed
// watch asks the server for, and what it must drop of what the server
// repeats.
//
// The events of one revision may be split across server messages, so a
// stream can break in the middle of a revision. While that may be the case
// (open), the watch resumes at that revision itself and drops the events at
// it whose key it already delivered; (revision, key) is unique in
// raftwatch. Once a PROGRESS at or above the revision, or an event above it,
// shows the revision complete, the watch resumes after it.
type position struct {
	// set is false only until the first CREATED of a watch that starts
	// from now, whose revision it then takes.
	set bool
	// rev is the highest revision delivered (by a PUT, DELETE or
	// PROGRESS), or the revision the watch starts after.
	rev uint64
	// open: rev came from a PUT or DELETE and nothing since has shown that
	// every event at rev was delivered.
	open bool
	// first is the first key delivered at rev while open, and more the
	// others (nil until a revision brings a watch two keys: most bring
	// one, and a million watches at rest hold no map). first refers to
	// the key of a response, which nobody changes.
	first []byte
	more  map[string]struct{}
}

// startingAfter is the position of a watch that delivers the events after
// rev.
func startingAfter(rev uint64) position {
	return position{set: true, rev: rev}
}

// resumeAt is the start_revision that asks for everything not yet
// delivered (never 0, which would mean "from now").
func (p *position) resumeAt() uint64 {
	if p.open {
		return p.rev
	}
	return p.rev + 1
}

// fresh reports whether r (a PUT, DELETE or PROGRESS) is news to the
// consumer: a data event not yet delivered, or a PROGRESS not below what
// was delivered.
func (p *position) fresh(r *pb.WatchResponse) bool {
	switch r.Type {
	case pb.EventType_PUT, pb.EventType_DELETE:
		if r.Revision != p.rev {
			return r.Revision > p.rev
		}
		if !p.open {
			return false
		}
		if p.first != nil && bytes.Equal(p.first, r.Key) {
			return false
		}
		_, seen := p.more[string(r.Key)]
		return !seen
	case pb.EventType_PROGRESS:
		return r.Revision >= p.rev
	}
	return true
}

// record notes that r, which fresh admitted, was delivered.
func (p *position) record(r *pb.WatchResponse) {
	switch r.Type {
	case pb.EventType_PUT, pb.EventType_DELETE:
		if r.Revision > p.rev {
			p.rev, p.open = r.Revision, true
			p.forget()
		}
		switch {
		case p.first == nil:
			p.first = r.Key
			if p.first == nil {
				p.first = []byte{} // an empty key is a key
			}
		case p.more == nil:
			p.more = map[string]struct{}{string(r.Key): {}}
		default:
			p.more[string(r.Key)] = struct{}{}
		}
	case pb.EventType_PROGRESS:
		p.rev, p.open = r.Revision, false
		p.forget()
	}
}

// forget empties the keys delivered at rev.
func (p *position) forget() {
	p.first = nil
	if len(p.more) > 0 {
		clear(p.more)
	}
}
