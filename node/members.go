package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
	if id == "" || clientAddr == "" {
		return 0, invalid("id and client address are required")
	}
	if _, _, err := net.SplitHostPort(clientAddr); err != nil {
		return 0, invalid("client address %q: want host:port", clientAddr)
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
	ctx, cancel := context.WithTimeout(context.Background(), setMemberTimeout)
	defer cancel()
	go func() { // Close must not wait out the call
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	cc, err := grpc.NewClient(addrs[string(leader)], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, err
	}
	defer cc.Close()
	r, err := pb.NewClusterClient(cc).SetMember(ctx, &pb.SetMemberRequest{Id: n.cfg.ID, ClientAddr: n.cfg.ClientAddr})
	if err != nil {
		return false, fmt.Errorf("ask leader %s to record it: %w", leader, err)
	}
	n.log.Info("client address recorded by the leader", "client_addr", n.cfg.ClientAddr, "leader", string(leader), "index", r.Index)
	return true, nil
}
