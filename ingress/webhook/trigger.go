package webhook

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// triggerName returns the bare name of a trigger: "@nightshift" and
// "/nightshift" both give "nightshift".
func triggerName(trigger string) string {
	return strings.ToLower(strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(trigger), "@/")))
}

// stripQuotedAndCode removes fenced code blocks (``` and ~~~), inline code
// spans and quoted lines ("> ...") from a Markdown comment, so a trigger
// that only appears in quoted or code text does not start work.
func stripQuotedAndCode(body string) string {
	body = strings.ReplaceAll(body, "\r\n", "\n")
	var out strings.Builder
	fence := ""
	for _, line := range strings.Split(body, "\n") {
		trimmed := strings.TrimLeft(line, " \t")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]+" \t") == "" {
				fence = ""
			}
			continue
		}
		if f := fenceOf(trimmed); f != "" {
			fence = f
			continue
		}
		if strings.HasPrefix(trimmed, ">") {
			continue
		}
		out.WriteString(stripInlineCode(line))
		out.WriteByte('\n')
	}
	return out.String()
}

// fenceOf returns the fence a line opens (``` or ~~~, possibly longer) or "".
func fenceOf(line string) string {
	for _, c := range []byte{'`', '~'} {
		n := 0
		for n < len(line) && line[n] == c {
			n++
		}
		if n >= 3 {
			return strings.Repeat(string(c), n)
		}
	}
	return ""
}

// stripInlineCode removes `code` spans from one line; an unmatched
// backtick run is kept as text.
func stripInlineCode(line string) string {
	var out strings.Builder
	for {
		i := strings.IndexByte(line, '`')
		if i < 0 {
			out.WriteString(line)
			return out.String()
		}
		n := i
		for n < len(line) && line[n] == '`' {
			n++
		}
		run := line[i:n]
		end := strings.Index(line[n:], run)
		if end < 0 {
			out.WriteString(line)
			return out.String()
		}
		out.WriteString(line[:i])
		out.WriteByte(' ')
		line = line[n+end+len(run):]
	}
}

// findTrigger looks for "@name" or "/name" as a whole word in text (already
// stripped of code and quotes) and returns the instruction that follows it:
// the rest of the text, trimmed. ok is false when the trigger is absent.
func findTrigger(text, trigger string) (instruction string, ok bool) {
	name := triggerName(trigger)
	if name == "" {
		return "", false
	}
	for k := 0; k < len(text); k++ {
		if text[k] != '@' && text[k] != '/' {
			continue
		}
		end := k + 1 + len(name)
		if end > len(text) || !strings.EqualFold(text[k+1:end], name) {
			continue
		}
		// The sigil must start a word.
		if k > 0 {
			r, _ := utf8.DecodeLastRuneInString(text[:k])
			if isWordRune(r) || r == '/' || r == '@' || r == '.' || r == '-' {
				continue
			}
		}
		// The name must end a word.
		if end < len(text) {
			r, _ := utf8.DecodeRuneInString(text[end:])
			if isWordRune(r) || r == '-' || r == '/' || r == '@' {
				continue
			}
		}
		rest := strings.TrimLeft(text[end:], ":,")
		return strings.TrimSpace(rest), true
	}
	return "", false
}

func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}
