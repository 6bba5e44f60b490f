package github

import "time"

// User is the GitHub profile from GET /user (Identity.Profile). Fields GitHub
// sends as null are empty.
type User struct {
	// ID is GitHub's permanent numeric user id (Identity.Subject in decimal).
	ID     int64  `json:"id"`
	NodeID string `json:"node_id"`
	// Login is the user's handle; it can be renamed and later reused by
	// someone else, so it is never an id.
	Login string `json:"login"`
	Name  string `json:"name"`
	// Email is the public profile address. GitHub does not say whether it
	// is verified; Identity.Email comes from GET /user/emails instead.
	Email     string    `json:"email"`
	AvatarURL string    `json:"avatar_url"`
	HTMLURL   string    `json:"html_url"`
	Company   string    `json:"company"`
	Blog      string    `json:"blog"`
	Location  string    `json:"location"`
	Bio       string    `json:"bio"`
	Type      string    `json:"type"` // "User"
	SiteAdmin bool      `json:"site_admin"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}
