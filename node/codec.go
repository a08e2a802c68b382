package node

import (
	"google.golang.org/protobuf/proto"

	pb "github.com/raftwatch/raftwatch/proto"
)

func mustMarshal(c *pb.Chunk) []byte {
	b, err := proto.Marshal(c)
	if err != nil {
		panic("node: marshal chunk: " + err.Error())
	}
	return b
}

func unmarshal(b []byte, c *pb.Chunk) error { return proto.Unmarshal(b, c) }
