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

// maskQuotedAndCode blanks out fenced code blocks (``` and ~~~), inline
// code spans and quoted lines ("> ...") of a Markdown comment, so a trigger
// that only appears in quoted or code text does not start work. The result
// has the same length as body (every masked byte but newlines becomes a
// space), so a position found in it is a position in body.
func maskQuotedAndCode(body string) string {
	out := []byte(body)
	fence := ""
	pos := 0
	for _, line := range strings.SplitAfter(body, "\n") {
		start := pos
		pos += len(line)
		content := strings.TrimRight(line, "\r\n")
		trimmed := strings.TrimLeft(content, " \t")
		mask := false
		switch {
		case fence != "":
			mask = true
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]+" \t") == "" {
				fence = ""
			}
		case fenceOf(trimmed) != "":
			fence = fenceOf(trimmed)
			mask = true
		case strings.HasPrefix(trimmed, ">"):
			mask = true
		}
		if mask {
			blank(out[start : start+len(content)])
			continue
		}
		maskInlineCode(out[start : start+len(content)])
	}
	return string(out)
}

func blank(b []byte) {
	for i := range b {
		b[i] = ' '
	}
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

// maskInlineCode blanks `code` spans in one line; an unmatched backtick run
// is kept as text.
func maskInlineCode(line []byte) {
	for i := 0; i < len(line); {
		if line[i] != '`' {
			i++
			continue
		}
		n := i
		for n < len(line) && line[n] == '`' {
			n++
		}
		run := string(line[i:n])
		end := strings.Index(string(line[n:]), run)
		if end < 0 {
			i = n
			continue
		}
		stop := n + end + len(run)
		blank(line[i:stop])
		i = stop
	}
}

// commandIn finds the trigger in a Markdown comment, ignoring quoted lines
// and code, and returns the instruction: the original text after the
// trigger (code blocks included), trimmed.
func commandIn(body, trigger string) (string, bool) {
	end, ok := findTrigger(maskQuotedAndCode(body), trigger)
	if !ok {
		return "", false
	}
	rest := strings.TrimLeft(body[end:], ":,")
	return strings.TrimSpace(strings.ReplaceAll(rest, "\r\n", "\n")), true
}

// findTrigger looks for "@name" or "/name" as a whole word in text and
// returns the offset just past it.
func findTrigger(text, trigger string) (end int, ok bool) {
	name := triggerName(trigger)
	if name == "" {
		return 0, false
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
		return end, true
	}
	return 0, false
}

func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}
