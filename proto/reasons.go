package raftwatchpb

// ReasonRemoved is the google.rpc.ErrorInfo reason of the
// FAILED_PRECONDITION a node answers once it has been removed from the
// cluster: the request was not applied, and no request to that node will
// be. A client tries another endpoint. (A watch canceled for that reason
// carries code FAILED_PRECONDITION in its CANCELED.)
const ReasonRemoved = "REMOVED"

// ReasonNotApplied is the google.rpc.ErrorInfo reason of an UNAVAILABLE
// error whose request was certainly not applied (no leader, the leader not
// ready, the node shutting down): a client may retry it elsewhere without
// risking a double write.
const ReasonNotApplied = "NOT_APPLIED"

// ErrorDomain is the google.rpc.ErrorInfo domain of the reasons above.
const ErrorDomain = "raftwatch"
