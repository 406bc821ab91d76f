package local

import (
	"bytes"
	"encoding/base64"
	"html"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strings"
)

const maxParts = 50

// parseMail returns a message's decoded subject and its readable text: the
// first text/plain part, else the first text/html part with tags removed.
// A message that does not parse is returned raw.
func parseMail(r io.Reader) (subject, body string) {
	raw, _ := io.ReadAll(r)
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return "", string(raw)
	}
	dec := new(mime.WordDecoder)
	subject = msg.Header.Get("Subject")
	if d, err := dec.DecodeHeader(subject); err == nil {
		subject = d
	}
	parts := 0
	plain, htm := textOf(mail.Header(msg.Header).Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, &parts)
	switch {
	case plain != "":
		body = plain
	case htm != "":
		body = htmlText(htm)
	}
	return subject, strings.TrimSpace(body)
}

// textOf walks a MIME entity and returns its first text/plain and
// text/html contents.
func textOf(ctype, cte string, r io.Reader, parts *int) (plain, htm string) {
	*parts++
	if *parts > maxParts {
		return "", ""
	}
	media, params, err := mime.ParseMediaType(ctype)
	if ctype == "" || err != nil {
		media = "text/plain"
	}
	if strings.HasPrefix(media, "multipart/") {
		mr := multipart.NewReader(r, params["boundary"])
		for {
			part, err := mr.NextRawPart()
			if err != nil {
				break
			}
			p, h := textOf(part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part, parts)
			if plain == "" {
				plain = p
			}
			if htm == "" {
				htm = h
			}
			if plain != "" {
				break
			}
		}
		return plain, htm
	}
	if media != "text/plain" && media != "text/html" {
		return "", ""
	}
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &newlineStripper{r: r})
	}
	b, _ := io.ReadAll(r)
	if media == "text/html" {
		return "", string(b)
	}
	return string(b), ""
}

var (
	dropRe  = regexp.MustCompile(`(?is)<(script|style|head)[^>]*>.*?</(script|style|head)>`)
	hrefRe  = regexp.MustCompile(`(?is)<a\s[^>]*href\s*=\s*["']([^"']+)["'][^>]*>`)
	breakRe = regexp.MustCompile(`(?i)<(br|/p|/div|/tr|/h[1-6]|/li)[^>]*>`)
	tagRe   = regexp.MustCompile(`(?s)<[^>]*>`)
	spaceRe = regexp.MustCompile(`[ \t]+`)
)

// htmlText reduces HTML to text, keeping link targets visible so token
// links can be found.
func htmlText(s string) string {
	s = dropRe.ReplaceAllString(s, "")
	s = hrefRe.ReplaceAllString(s, " $1 ")
	s = breakRe.ReplaceAllString(s, "\n")
	s = tagRe.ReplaceAllString(s, "")
	s = html.UnescapeString(s)
	return spaceRe.ReplaceAllString(s, " ")
}

// newlineStripper drops CR and LF so base64 bodies split over lines decode.
type newlineStripper struct{ r io.Reader }

func (n *newlineStripper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		j := 0
		for _, c := range p[:k] {
			if c != '\r' && c != '\n' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
