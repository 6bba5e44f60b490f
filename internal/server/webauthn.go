package server

// WebAuthnOptions configure passkeys (SPEC §5). Filled in by the passkey work.
type WebAuthnOptions struct{}

// webauthnRoutes registers the passkey routes and page parts.
func (s *Server) webauthnRoutes() {}
