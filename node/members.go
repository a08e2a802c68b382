package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/raftwatch/raftwatch/proto"
)

// Every member's client address is kept in the replicated state (SET_MEMBER
// ops, fsm.Members), so that any node can hint at the leader and list every
// member with its address. Three paths record one: a new leader records its
// own as it takes office (announceLeader); AddVoter records the new
// member's; and every node, from start until it is done, asks the leader to
// record its own when the state lacks it or holds another
// (recordClientAddr).

const (
	// clientAddrRetryMin and clientAddrRetryMax bound the pause between
	// attempts of recordClientAddr. A node usually finds the leader's
	// announcement within a second of start; the short cap keeps the
	// address unknown for at most about a second after that, and an
	// attempt without a known leader is only a local read.
	clientAddrRetryMin = 100 * time.Millisecond
	clientAddrRetryMax = time.Second
	// clientAddrAttempts bounds one round of attempts (about a minute);
	// after it, the next round waits for a new leader to be observed.
	clientAddrAttempts = 60
	// setMemberTimeout bounds one SetMember call to the leader.
	setMemberTimeout = 3 * time.Second
)

// ErrUnknownMember is wrapped by errors about a server ID that is not in the
// cluster's configuration.
var ErrUnknownMember = errors.New("no such member")

// checkMember returns ErrUnknownMember, naming the members, when id is not
// in the raft configuration.
func (n *Node) checkMember(id string) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("%w: read configuration: %w", ErrNotApplied, err)
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return nil
		}
		ids = append(ids, string(s.ID))
	}
	slices.Sort(ids)
	return fmt.Errorf("%w %q (members: %s)", ErrUnknownMember, id, strings.Join(ids, ", "))
}

// SetMember records member id's client address (leader only).
func (n *Node) SetMember(ctx context.Context, id, clientAddr string) (uint64, error) {
	if err := checkMemberID(id); err != nil {
		return 0, err
	}
	if err := checkAddr("client address", clientAddr); err != nil {
		return 0, err
	}
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	if err := n.checkMember(id); err != nil {
		return 0, err
	}
	r, err := n.propose(ctx, &pb.Op{Kind: pb.Op_SET_MEMBER, Key: []byte(id), Value: []byte(clientAddr)})
	return r.Revision, err
}

// recordClientAddr runs until this node's client address is in the
// replicated state: it asks the leader (SetMember) with a growing pause, at
// most clientAddrAttempts times per round, trying again at once when a
// leader is observed; after a round it waits for a new leader.
func (n *Node) recordClientAddr() {
	leaders := make(chan raft.Observation, 1)
	obs := raft.NewObserver(leaders, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	timer := time.NewTimer(clientAddrRetryMin)
	defer timer.Stop()
	for {
		pause := clientAddrRetryMin
		var err error
		for attempt := 0; attempt < clientAddrAttempts; attempt++ {
			var done bool
			if done, err = n.tryRecordClientAddr(); done {
				return
			}
			timer.Reset(pause)
			select {
			case <-n.stop:
				return
			case <-leaders: // the new leader announces itself within milliseconds
				pause = clientAddrRetryMin
				continue
			case <-timer.C:
			}
			pause = min(2*pause, clientAddrRetryMax)
		}
		n.log.Warn("could not record this node's client address; trying again when a new leader is elected",
			"attempts", clientAddrAttempts, "err", err)
		select {
		case <-n.stop:
			return
		case <-leaders:
		}
	}
}

// tryRecordClientAddr makes one attempt; done is true once the address is
// recorded.
func (n *Node) tryRecordClientAddr() (done bool, err error) {
	if n.removed.Load() {
		return true, nil // nothing to record for a removed node
	}
	addrs, err := n.fsm.Members()
	if err != nil {
		return false, err
	}
	if addrs[n.cfg.ID] == n.cfg.ClientAddr {
		return true, nil
	}
	_, leader := n.raft.LeaderWithID()
	switch {
	case leader == "":
		return false, ErrNoLeader
	case string(leader) == n.cfg.ID:
		return false, errors.New("this node leads; its announcement records the address")
	case addrs[string(leader)] == "":
		return false, fmt.Errorf("leader %s has not announced its client address yet", leader)
	}
	var r *pb.SetMemberResponse
	err = n.callMember(addrs[string(leader)], setMemberTimeout, func(ctx context.Context, c pb.ClusterClient) error {
		var cerr error
		r, cerr = c.SetMember(ctx, &pb.SetMemberRequest{Id: n.cfg.ID, ClientAddr: n.cfg.ClientAddr})
		return cerr
	})
	if err != nil {
		return false, fmt.Errorf("ask leader %s to record it: %w", leader, err)
	}
	n.log.Info("client address recorded by the leader", "client_addr", n.cfg.ClientAddr, "leader", string(leader), "index", r.Index)
	return true, nil
}

// Limits on member ids and how membership changes wait, with reasons.
const (
	// maxMemberIDLen keeps ids readable in logs and the CLI; raft itself
	// has no limit.
	maxMemberIDLen = 64
	// catchUpPoll is how often the leader asks a new member how far it
	// has applied.
	catchUpPoll = 200 * time.Millisecond
	// catchUpMargin is how many entries a new member may trail the
	// leader's commit index by and count as caught up: under steady writes
	// a healthy follower is always a few entries behind (each entry is a
	// chunk of up to chunkMaxOps writes).
	catchUpMargin = 16
	// catchUpStatusTimeout bounds one Status call to the new member.
	catchUpStatusTimeout = time.Second
	// defaultCatchUpTimeout bounds the wait when the request has no
	// deadline.
	defaultCatchUpTimeout = 2 * time.Minute
	// answerMargin is kept from the request's deadline to answer with what
	// happened before the caller gives up (at most a quarter of the time).
	answerMargin = time.Second
)

// checkMemberID accepts ids of letters, digits, '.', '_' and '-', as a
// host name or a short tag would be.
func checkMemberID(id string) error {
	if id == "" {
		return invalid("member id is required")
	}
	if len(id) > maxMemberIDLen {
		return invalid("member id %q is %d bytes; at most %d", id, len(id), maxMemberIDLen)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return invalid("member id %q: use only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// checkAddr accepts host:port with a numeric port in 1-65535 and a host
// other nodes can reach (not empty, not 0.0.0.0 or ::). The host is not
// resolved: a name may not resolve yet where the node will run.
func checkAddr(what, addr string) error {
	if addr == "" {
		return invalid("%s is required (host:port)", what)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalid("%s %q: want host:port, e.g. 10.0.0.4:7001", what, addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return invalid("%s %q: the port must be a number from 1 to 65535", what, addr)
	}
	if host == "" || strings.ContainsAny(host, " /\t") {
		return invalid("%s %q: want host:port with a host name or IP address", what, addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return invalid("%s %q: %s is not an address other nodes can reach; give the node's own address", what, addr, host)
	}
	return nil
}

// AddProgress is a new member's catch-up, as the leader sees it.
type AddProgress struct {
	// Applied is the member's applied index (valid when Err is nil);
	// Commit is the leader's commit index.
	Applied, Commit uint64
	// Healthy is the member's own health (Status.Healthy); Unhealthy
	// says why not. An unhealthy member is not promoted.
	Healthy   bool
	Unhealthy string
	// Err says why the member's status could not be read, or wraps
	// ErrMemberRemoved when it reports it was removed.
	Err error
}

// ErrMemberRemoved is wrapped by AddProgress.Err and AddVoter's error when
// the new member reports role "removed": its data directory records an
// earlier removal, and it will never catch up.
var ErrMemberRemoved = errors.New("the member reports it was removed from the cluster")

// AddVoter adds member id (leader only): as a non-voter first, which
// counts toward no quorum; once it has applied everything the leader had
// committed (within catchUpMargin), it is promoted to voter. progress, if
// not nil, is called after each look at the member. If the member does not
// catch up before ctx's deadline, it is left a non-voter and the error
// wraps ErrNotCaughtUp; calling AddVoter again with the same arguments
// resumes the wait. The promotion is refused (ErrQuorumAtRisk) if the
// voters the leader can reach would be too few to commit, unless force.
func (n *Node) AddVoter(ctx context.Context, id, raftAddr, clientAddr string, force bool, progress func(AddProgress)) (uint64, error) {
	if err := n.Serving(); err != nil {
		return 0, err
	}
	if err := n.writable(); err != nil {
		return 0, err
	}
	if err := checkMemberID(id); err != nil {
		return 0, err
	}
	if err := checkAddr("raft address", raftAddr); err != nil {
		return 0, err
	}
	if err := checkAddr("client address", clientAddr); err != nil {
		return 0, err
	}
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	resume, err := n.checkNewMember(id, raftAddr, clientAddr)
	if err != nil {
		return 0, err
	}
	from := n.raft.CommitIndex() // a resumed member must have applied this
	if !resume {
		f := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutFrom(ctx))
		if err := n.await(f); err != nil {
			return 0, classifyApplyError(err)
		}
		from = f.Index()
		n.log.Info("member added as a non-voter; promoting it once it has caught up", "id", id, "raft_addr", raftAddr, "index", from)
	} else {
		n.log.Info("member is a non-voter; waiting again for it to catch up", "id", id, "raft_addr", raftAddr)
	}
	op := &pb.Op{Kind: pb.Op_SET_MEMBER, Key: []byte(id), Value: []byte(clientAddr)}
	if _, err := n.propose(ctx, op); err != nil {
		return 0, fmt.Errorf("%s was added as a non-voter, but recording its client address failed (call again to resume): %w", id, err)
	}
	if err := n.awaitCatchUp(ctx, id, clientAddr, from, progress); err != nil {
		return 0, err
	}
	voters, err := n.voters()
	if err != nil {
		return 0, err
	}
	// id has just shown it is up to date: it counts reachable even if the
	// leader's heartbeats to it have not resumed yet.
	if err := n.checkQuorum(append(voters, raft.ServerID(id)), "promoting "+id, force, raft.ServerID(id)); err != nil {
		return 0, err
	}
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutFrom(ctx))
	if err := n.await(f); err != nil {
		return 0, fmt.Errorf("%s caught up but its promotion failed; it is still a non-voter (call again to resume): %w", id, classifyApplyError(err))
	}
	n.log.Info("member promoted to voter", "id", id, "index", f.Index())
	return f.Index(), nil
}

// checkNewMember refuses an id or address another member has; resume is
// true when id is already a non-voter at raftAddr (an add to finish).
func (n *Node) checkNewMember(id, raftAddr, clientAddr string) (resume bool, err error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return false, fmt.Errorf("%w: read configuration: %w", ErrNotApplied, err)
	}
	addrs, err := n.fsm.Members()
	if err != nil {
		return false, err
	}
	for _, s := range f.Configuration().Servers {
		sid, saddr := string(s.ID), string(s.Address)
		switch {
		case sid == id && saddr == raftAddr && s.Suffrage == raft.Voter:
			return false, fmt.Errorf("%w: %s is already a voter at %s", ErrAlreadyExists, id, raftAddr)
		case sid == id && saddr == raftAddr:
			resume = true
		case sid == id:
			return false, fmt.Errorf("%w: id %s is already the member at raft address %s (remove it first to move it)", ErrAlreadyExists, id, saddr)
		case saddr == raftAddr:
			return false, fmt.Errorf("%w: raft address %s is already member %s's", ErrAlreadyExists, raftAddr, sid)
		case addrs[sid] == clientAddr:
			return false, fmt.Errorf("%w: client address %s is already member %s's", ErrAlreadyExists, clientAddr, sid)
		}
	}
	return resume, nil
}

// awaitCatchUp polls member id's Status at clientAddr until it has applied
// index from and trails the leader's commit index by at most catchUpMargin.
func (n *Node) awaitCatchUp(ctx context.Context, id, clientAddr string, from uint64, progress func(AddProgress)) error {
	start := time.Now()
	deadline := start.Add(defaultCatchUpTimeout)
	if d, ok := ctx.Deadline(); ok {
		deadline = d.Add(-min(answerMargin, time.Until(d)/4))
	}
	cc, err := n.dialMember(clientAddr)
	if err != nil {
		return invalid("client address %q: %v", clientAddr, err)
	}
	defer cc.Close()
	t := time.NewTicker(catchUpPoll)
	defer t.Stop()
	var last AddProgress
	for {
		last = n.catchUpStep(ctx, pb.NewClusterClient(cc), id)
		if progress != nil {
			progress(last)
		}
		if errors.Is(last.Err, ErrMemberRemoved) {
			return fmt.Errorf("%w: %w: %s reports it was removed from the cluster: wipe its data directory and start it again before adding it (it stays a non-voter until then; add it again to resume, or remove it)",
				ErrNotCaughtUp, ErrMemberRemoved, id)
		}
		if last.Err == nil && last.Healthy && last.Applied >= from && last.Applied+catchUpMargin >= last.Commit {
			return nil
		}
		if n.raft.State() != raft.Leader {
			return fmt.Errorf("%w (%s stays a non-voter; call again on the new leader to resume)", n.notLeader(), id)
		}
		select {
		case <-n.stop:
			return ErrShuttingDown
		case <-ctx.Done():
		case <-t.C:
			if time.Now().Before(deadline) {
				continue
			}
		}
		state := fmt.Sprintf("it has applied %d of %d entries", last.Applied, last.Commit)
		if last.Err == nil && !last.Healthy {
			state += fmt.Sprintf(", but it reports damaged stored data (%s) and is not promoted", last.Unhealthy)
		}
		if last.Err != nil {
			state = fmt.Sprintf("its node does not answer at %s: %v", clientAddr, last.Err)
		}
		return fmt.Errorf("%w after %v: %s. %s was left as a non-voter, which counts toward no quorum: "+
			"add it again with the same arguments to keep waiting, or remove it", ErrNotCaughtUp, time.Since(start).Round(time.Millisecond), state, id)
	}
}

// catchUpStep asks the new member once how far it has applied.
func (n *Node) catchUpStep(ctx context.Context, cc pb.ClusterClient, id string) AddProgress {
	ctx, cancel := context.WithTimeout(ctx, catchUpStatusTimeout)
	defer cancel()
	p := AddProgress{Commit: n.raft.CommitIndex()}
	st, err := cc.Status(ctx, &pb.StatusRequest{})
	switch {
	case err != nil:
		p.Err = err
	case st.Id != id:
		p.Err = fmt.Errorf("the node there is %q, not %q", st.Id, id)
	case st.Role == "removed":
		p.Err = fmt.Errorf("%w: wipe its data directory and start it again", ErrMemberRemoved)
	default:
		p.Applied, p.Healthy, p.Unhealthy = st.AppliedIndex, st.Healthy, st.UnhealthyReason
	}
	return p
}

// voters returns the voters of the latest configuration.
func (n *Node) voters() ([]raft.ServerID, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("%w: read configuration: %w", ErrNotApplied, err)
	}
	var out []raft.ServerID
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, s.ID)
		}
	}
	return out, nil
}

// checkQuorum refuses (ErrQuorumAtRisk) a change to the voter set voters
// when fewer than a majority of them are reachable by the leader (or among
// live), unless force.
func (n *Node) checkQuorum(voters []raft.ServerID, change string, force bool, live ...raft.ServerID) error {
	var unreachable []string
	for _, id := range voters {
		if !n.reachable(id) && !slices.Contains(live, id) {
			unreachable = append(unreachable, string(id))
		}
	}
	reachable, need := len(voters)-len(unreachable), len(voters)/2+1
	if len(voters) == 0 || reachable >= need {
		return nil
	}
	slices.Sort(unreachable)
	msg := fmt.Sprintf("%s would leave %d of %d voters reachable, %d needed to commit (unreachable: %s)",
		change, reachable, len(voters), need, strings.Join(unreachable, ", "))
	if force {
		n.log.Warn("membership change forced", "change", msg)
		return nil
	}
	return fmt.Errorf("%w: %s; bring them back first, or force it", ErrQuorumAtRisk, msg)
}

// RemoveServer removes a member (leader only); an id that is not a member
// is ErrUnknownMember. Removing a voter is refused (ErrQuorumAtRisk) if the
// remaining voters the leader can reach would be too few to commit, unless
// force.
func (n *Node) RemoveServer(ctx context.Context, id string, force bool) (uint64, error) {
	if err := n.Serving(); err != nil {
		return 0, err
	}
	if err := n.writable(); err != nil {
		return 0, err
	}
	if id == "" {
		return 0, invalid("member id is required")
	}
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	if err := n.checkMember(id); err != nil {
		return 0, err
	}
	voters, err := n.voters()
	if err != nil {
		return 0, err
	}
	if slices.Contains(voters, raft.ServerID(id)) {
		rest := slices.DeleteFunc(voters, func(v raft.ServerID) bool { return v == raft.ServerID(id) })
		if err := n.checkQuorum(rest, "removing "+id, force); err != nil {
			return 0, err
		}
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutFrom(ctx))
	if err := n.await(f); err != nil {
		return 0, classifyApplyError(err)
	}
	n.log.Info("member removed", "id", id, "index", f.Index())
	return f.Index(), nil
}

func timeoutFrom(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d)
	}
	return 10 * time.Second
}
