package main

import "github.com/brokerauth/broker/internal/server"

// passwordOptions wires password sign-up and login when password.enabled.
func passwordOptions(d featureDeps) (*server.PasswordOptions, error) { return nil, nil }
