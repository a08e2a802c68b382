package raftwatchpb

// ReasonRemoved is the google.rpc.ErrorInfo reason of the
// FAILED_PRECONDITION a node answers once it has been removed from the
// cluster: the request was not applied, and no request to that node will
// be. A client tries another endpoint. (A watch canceled for that reason
// carries code FAILED_PRECONDITION in its CANCELED.)
const ReasonRemoved = "REMOVED"
