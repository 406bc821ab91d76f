package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var typeOfConfig = reflect.TypeOf(Config{})

// checkKeys walks a YAML mapping against a struct type and reports the first
// key the struct does not have, by its dotted path (repos[0].tset).
func checkKeys(n *yaml.Node, t reflect.Type, prefix string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeOf(Secret("")) || n.Kind != yaml.MappingNode {
			return nil
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			f, ok := fields[k]
			key := join(prefix, k)
			if !ok {
				return &Error{Key: key, Msg: fmt.Sprintf("unknown key (line %d)", n.Content[i].Line)}
			}
			if err := checkKeys(n.Content[i+1], f.Type, key); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkKeys(n.Content[i+1], t.Elem(), join(prefix, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", prefix, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			m[name] = f
		}
	}
	return m
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

// keyFromYAMLErr finds the dotted key at the line a decode error names.
func keyFromYAMLErr(root *yaml.Node, err error) string {
	m := yamlLineRe.FindStringSubmatch(err.Error())
	if m == nil {
		return "(file)"
	}
	line, _ := strconv.Atoi(m[1])
	if k := keyAtLine(root.Content[0], line, ""); k != "" {
		return k
	}
	return "(file)"
}

func keyAtLine(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := join(prefix, n.Content[i].Value)
			v := n.Content[i+1]
			if n.Content[i].Line == line && (v.Kind == yaml.ScalarNode || v.Line == line) {
				if k := keyAtLine(v, line, key); k != "" && v.Kind != yaml.ScalarNode {
					return k
				}
				return key
			}
			if k := keyAtLine(v, line, key); k != "" {
				return k
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			key := fmt.Sprintf("%s[%d]", prefix, i)
			if c.Line == line && c.Kind == yaml.ScalarNode {
				return key
			}
			if k := keyAtLine(c, line, key); k != "" {
				return k
			}
		}
	}
	return ""
}

func cleanYAMLErr(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.ReplaceAll(s, "unmarshal errors:\n  ", "")
	return strings.ReplaceAll(s, "\n  ", "; ")
}

// applyEnv applies NIGHTSHIFT_<SECTION>_<KEY> overrides for scalar and list
// fields up to two levels deep (NIGHTSHIFT_LISTEN, NIGHTSHIFT_SANDBOX_DRIVER,
// NIGHTSHIFT_GITHUB_WEBHOOK_SECRETS=a,b). Variables that name no key are left
// alone: NIGHTSHIFT_TOKEN and friends belong to the client.
func applyEnv(c *Config, env map[string]string) error {
	v := reflect.ValueOf(c).Elem()
	return envWalk(v, "NIGHTSHIFT", "", env, 0)
}

func envWalk(v reflect.Value, envPrefix, keyPrefix string, env map[string]string, depth int) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		envKey := envPrefix + "_" + strings.ToUpper(name)
		key := join(keyPrefix, name)
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Secret("")) {
			if depth < 2 {
				if err := envWalk(fv, envKey, key, env, depth+1); err != nil {
					return err
				}
			}
			continue
		}
		val, ok := env[envKey]
		if !ok {
			continue
		}
		if err := setScalar(fv, val); err != nil {
			return &Error{Key: key, Msg: fmt.Sprintf("from %s: %v", envKey, err)}
		}
	}
	return nil
}

func setScalar(v reflect.Value, s string) error {
	switch v.Interface().(type) {
	case Duration:
		var d Duration
		if err := d.UnmarshalYAML(&yaml.Node{Value: s}); err != nil {
			return err
		}
		v.Set(reflect.ValueOf(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("bad integer %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("bad number %q", s)
		}
		v.SetFloat(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("bad boolean %q", s)
		}
		v.SetBool(b)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from the environment")
		}
		var parts []string
		if s != "" {
			parts = strings.Split(s, ",")
		}
		sl := reflect.MakeSlice(v.Type(), len(parts), len(parts))
		for i, p := range parts {
			sl.Index(i).SetString(strings.TrimSpace(p))
		}
		v.Set(sl)
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
