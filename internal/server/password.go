package server

// PasswordOptions configure password sign-up and login (SPEC §6). Filled in
// by the password work.
type PasswordOptions struct{}

// passwordRoutes registers the password routes and page parts.
func (s *Server) passwordRoutes() {}
