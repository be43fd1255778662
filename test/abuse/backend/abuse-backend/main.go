// Command abuse-backend serves the abuse suite's minimal Milvus (package
// backend) on a loopback port chosen at start, which it prints, until its
// standard input closes (the test that started it is gone) or it gets
// SIGTERM or SIGINT.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/abuse/backend"
)

func main() {
	addr := "127.0.0.1:0"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "abuse-backend: %v\n", err)
		os.Exit(1)
	}
	b := backend.New()
	fmt.Printf("abuse-backend listening on %s\n", lis.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		b.Stop()
	}()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		b.Stop()
	}()
	if err := b.Serve(lis); err != nil {
		fmt.Fprintf(os.Stderr, "abuse-backend: %v\n", err)
		os.Exit(1)
	}
}
