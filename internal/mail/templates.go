package mail

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"strings"
	texttemplate "text/template"
	"time"
)

// Kind names a message the broker sends.
type Kind string

// The messages the broker sends.
const (
	// KindLogin carries an email sign-in link.
	KindLogin Kind = "login"
	// KindReset carries a password-reset link.
	KindReset Kind = "reset"
	// KindVerify carries a link that confirms the address of a password
	// sign-up.
	KindVerify Kind = "verify"
)

// Kinds are all message kinds; a template set must have each.
var Kinds = []Kind{KindLogin, KindReset, KindVerify}

// Data is what a template sees.
type Data struct {
	Email   string        // the recipient
	Link    string        // the link to follow
	Site    string        // the broker's host name, e.g. auth.example.com
	Expires time.Duration // how long the link works
}

// ExpiresIn is Expires in words: "10 minutes", "1 hour".
func (d Data) ExpiresIn() string {
	e := d.Expires.Round(time.Minute)
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case e < time.Minute:
		return "less than a minute"
	case e%time.Hour == 0:
		return plural(int(e/time.Hour), "hour")
	default:
		return plural(int(e/time.Minute), "minute")
	}
}

//go:embed templates/*.txt templates/*.html
var defaultFS embed.FS

// Templates render messages. For each kind K the text template file
// K.txt defines "subject" and "text", and the optional html/template file
// K.html is the HTML alternative. Both see a [Data].
type Templates struct {
	text map[Kind]*texttemplate.Template
	html map[Kind]*htmltemplate.Template
}

// DefaultTemplates returns the embedded templates.
func DefaultTemplates() *Templates {
	t, err := ParseTemplates(defaultFS, "templates")
	if err != nil {
		panic("mail: default templates: " + err.Error())
	}
	return t
}

// ParseTemplates parses the templates of every kind in dir of fsys.
func ParseTemplates(fsys fs.FS, dir string) (*Templates, error) {
	t := &Templates{text: map[Kind]*texttemplate.Template{}, html: map[Kind]*htmltemplate.Template{}}
	for _, k := range Kinds {
		name := dir + "/" + string(k)
		tt, err := texttemplate.ParseFS(fsys, name+".txt")
		if err != nil {
			return nil, fmt.Errorf("mail: templates: %w", err)
		}
		for _, def := range []string{"subject", "text"} {
			if tt.Lookup(def) == nil {
				return nil, fmt.Errorf("mail: templates: %s.txt does not define %q", k, def)
			}
		}
		t.text[k] = tt
		if _, err := fs.Stat(fsys, name+".html"); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		ht, err := htmltemplate.ParseFS(fsys, name+".html")
		if err != nil {
			return nil, fmt.Errorf("mail: templates: %w", err)
		}
		t.html[k] = ht
	}
	return t, nil
}

// Render returns the message of kind k for d, addressed to d.Email.
func (t *Templates) Render(k Kind, d Data) (Message, error) {
	tt, ok := t.text[k]
	if !ok {
		return Message{}, fmt.Errorf("mail: no template for %q", k)
	}
	var subj, text bytes.Buffer
	if err := tt.ExecuteTemplate(&subj, "subject", d); err != nil {
		return Message{}, fmt.Errorf("mail: render %s subject: %w", k, err)
	}
	if err := tt.ExecuteTemplate(&text, "text", d); err != nil {
		return Message{}, fmt.Errorf("mail: render %s text: %w", k, err)
	}
	m := Message{
		To: d.Email,
		// A subject is one line, whatever the template did.
		Subject: strings.Join(strings.Fields(subj.String()), " "),
		Text:    strings.TrimSpace(text.String()) + "\n",
		Link:    d.Link,
	}
	if ht, ok := t.html[k]; ok {
		var b bytes.Buffer
		if err := ht.Execute(&b, d); err != nil {
			return Message{}, fmt.Errorf("mail: render %s html: %w", k, err)
		}
		m.HTML = b.String()
	}
	return m, nil
}
