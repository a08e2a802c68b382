package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/raftwatch/raftwatch/cluster-test/checker"
	pb "github.com/raftwatch/raftwatch/proto"
)

// Final-phase limits.
const (
	// convergeTimeout: how long the nodes get to agree on fsm_index.
	convergeTimeout = 60 * time.Second
	// convergePoll: interval between Status polls.
	convergePoll = 500 * time.Millisecond
	// convergeStable: consecutive equal polls needed.
	convergeStable = 3
	// readTimeout bounds a final List or the Log stream.
	readTimeout = 30 * time.Second
)

// waitConverged polls Status until a leader exists and every node reports the
// same fsm_index and applied index for convergeStable polls in a row (the
// fsm_index can stay below the commit index: no-op entries do not reach the
// state machine). It returns the last statuses and whether they converged.
func (c *cluster) waitConverged(ctx context.Context) (map[string]*pb.StatusResponse, bool, string) {
	deadline := time.Now().Add(convergeTimeout)
	stable := 0
	var last uint64
	var sts map[string]*pb.StatusResponse
	var why string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var errs map[string]error
		sts, errs = c.Statuses(ctx)
		ok := len(errs) == 0
		var idx, applied uint64
		leader := false
		for _, st := range sts {
			if st.Role == "leader" {
				leader = true
			}
			if idx == 0 {
				idx, applied = st.FsmIndex, st.AppliedIndex
			}
			if st.FsmIndex != idx || st.AppliedIndex != applied {
				ok = false
			}
		}
		why = fmt.Sprintf("errors %v, leader %v, statuses %s", errs, leader, describeStatuses(sts))
		if ok && leader && idx == last {
			stable++
		} else {
			stable = 0
		}
		last = idx
		if stable >= convergeStable {
			return sts, true, why
		}
		time.Sleep(convergePoll)
	}
	return sts, false, why
}

func describeStatuses(sts map[string]*pb.StatusResponse) string {
	var s string
	for id, st := range sts {
		s += fmt.Sprintf("[%s %s term=%d commit=%d applied=%d fsm=%d] ", id, st.Role, st.Term, st.CommitIndex, st.AppliedIndex, st.FsmIndex)
	}
	return s
}

// finalData reads node id's whole state with a serializable List of the
// prefix "/", under which the key rule puts every key: the KV workload's
// and the coordination workloads' keys alike, as the replayed log has them.
func (c *cluster) finalData(ctx context.Context, id string) (map[string]checker.KV, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	resp, err := pb.NewKVClient(c.conns[id]).List(ctx, &pb.ListRequest{Prefix: []byte("/"), Consistency: pb.Consistency_SERIALIZABLE})
	if err != nil {
		return nil, err
	}
	if resp.More {
		return nil, errors.New("List without a limit said more=true")
	}
	out := map[string]checker.KV{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = checker.KV{Value: string(kv.Value), ModRev: kv.ModRevision, CreateRev: kv.CreateRevision, Version: kv.Version, Lease: kv.Lease}
	}
	return out, nil
}

// pullLog streams node id's committed log from index 1.
func (c *cluster) pullLog(ctx context.Context, id string) (*checker.Log, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	st, err := pb.NewDebugClient(c.conns[id]).Log(ctx, &pb.LogRequest{FromIndex: 1})
	if err != nil {
		return nil, err
	}
	log := &checker.Log{}
	for first := true; ; first = false {
		e, err := st.Recv()
		if err == io.EOF {
			return log, nil
		}
		if err != nil {
			return log, fmt.Errorf("after %d entries: %w", len(log.Entries), err)
		}
		if first {
			log.FirstIndex = e.FirstIndex
		}
		le := checker.LogEntry{Index: e.Index, Type: e.Type}
		for _, op := range e.GetChunk().GetOps() {
			le.Ops = append(le.Ops, logOp(op))
		}
		log.Entries = append(log.Entries, le)
	}
}
