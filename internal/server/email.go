package server

// EmailOptions configure email magic links (SPEC §6). Filled in by the
// email work.
type EmailOptions struct{}

// emailRoutes registers the email-link routes and page parts.
func (s *Server) emailRoutes() {}
