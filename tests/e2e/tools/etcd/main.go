// Command etcd runs a single-member embedded etcd for the e2e suite.
//
// It listens on loopback ports picked by the kernel (port 0), prints
// "ETCD_CLIENT_URL=<url>" on stdout once the server is ready, and stops
// cleanly on SIGINT/SIGTERM. Data lives in --data-dir (fsync disabled:
// the data is thrown away after each run).
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd data (required)")
	logLevel := flag.String("log-level", "warn", "etcd log level")
	flag.Parse()
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}

	loopback := func() []url.URL { return []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}} }
	cfg := embed.NewConfig()
	cfg.Name = "e2e"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = loopback()
	cfg.AdvertiseClientUrls = loopback()
	cfg.ListenPeerUrls = loopback()
	cfg.AdvertisePeerUrls = loopback()
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}
	cfg.UnsafeNoFsync = true

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("starting etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		log.Fatalf("etcd failed: %v", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		log.Fatal("etcd was not ready within 60s")
	}
	fmt.Printf("ETCD_CLIENT_URL=http://%s\n", e.Clients[0].Addr().String())
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-e.Err():
		log.Printf("etcd failed: %v", err)
		e.Close()
		os.Exit(1)
	}
	e.Close()
}
