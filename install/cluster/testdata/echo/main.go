// Command echo is the workload of the local cluster's end-to-end test: a
// static HTTP server answering with its pod name, which also serves as the
// in-pod client (-lookup, -get) since its FROM-scratch image has no shell,
// nslookup or curl.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	lookup := flag.String("lookup", "", "resolve this name with the pod's resolver, print the addresses, exit")
	get := flag.String("get", "", "GET this URL, print the body, exit")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch {
	case *lookup != "":
		addrs, err := net.DefaultResolver.LookupHost(ctx, *lookup)
		exitOn(err)
		for _, a := range addrs {
			fmt.Println(a)
		}
	case *get != "":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, *get, nil)
		exitOn(err)
		resp, err := http.DefaultClient.Do(req)
		exitOn(err)
		defer resp.Body.Close()
		_, err = io.Copy(os.Stdout, resp.Body)
		exitOn(err)
	default:
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", host)
		})
		srv := &http.Server{Addr: *listen, ReadHeaderTimeout: 5 * time.Second}
		exitOn(srv.ListenAndServe())
	}
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}
