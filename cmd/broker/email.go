package main

import "github.com/brokerauth/broker/internal/server"

// emailOptions wires email magic links when email.sender is set.
func emailOptions(d featureDeps) (*server.EmailOptions, error) { return nil, nil }
