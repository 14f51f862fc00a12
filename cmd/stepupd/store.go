package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/authz/storage/memory"
	redisstore "github.com/stepup-dev/stepup/authz/storage/redis"
)

type storeCloser = storage.Store

// stores opens each kind of store named by the config's store setting.
var stores = map[string]func(url string) (storage.Store, error){
	"memory": func(string) (storage.Store, error) { return memory.New(memory.Config{}), nil },
	"redis":  func(url string) (storage.Store, error) { return redisstore.New(redisstore.Config{URL: url}) },
}

func storeKind(url string) string {
	if strings.HasPrefix(url, "redis://") || strings.HasPrefix(url, "rediss://") {
		return "redis"
	}
	return url
}

func openStore(url string) (storage.Store, error) {
	open, ok := stores[storeKind(url)]
	if !ok {
		return nil, fmt.Errorf("store: unknown kind %q (memory, redis://…, rediss://…)", storeKind(url))
	}
	return open(url)
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
