package vault

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// KeySize is the size of the root key and every derived key, in bytes.
const KeySize = 32

// KeySource yields the vault's 32-byte root key.
type KeySource interface {
	RootKey(ctx context.Context) ([]byte, error)
}

// ErrKeySource is wrapped by every error a built-in KeySource returns.
var ErrKeySource = errors.New("vault: root key unavailable")

// FileKey returns a KeySource reading the root key from path, a file holding
// 64 hex characters. When the file does not exist it is created with mode
// 0600 from crypto/rand, and logger gets a loud warning: losing that file
// makes every secret unreadable. A key file readable by group or others is
// refused. A nil logger discards.
func FileKey(path string, logger *slog.Logger) KeySource {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &fileKey{path: path, logger: logger}
}

type fileKey struct {
	path   string
	logger *slog.Logger
	mu     sync.Mutex
}

func (k *fileKey) RootKey(ctx context.Context) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, err := readKeyFile(k.path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("%w: generate key: %v", ErrKeySource, err)
	}
	if err := WriteKeyFile(k.path, key); err != nil {
		if errors.Is(err, fs.ErrExist) { // created concurrently by another process
			return readKeyFile(k.path)
		}
		return nil, err
	}
	k.logger.Warn("VAULT ROOT KEY CREATED: back this file up and keep it secret; without it every stored secret is lost",
		"path", k.path)
	return key, nil
}

// WriteKeyFile writes key as hex to a new file at path with mode 0600. It
// fails with an error wrapping fs.ErrExist when the file exists. The file
// appears whole or not at all: the key is written and synced to a temporary
// file in the same directory, then linked to path (which fails when path
// exists), so a crash, a failed start or a concurrent reader never sees an
// empty or partial key, and no temporary file is left behind.
func WriteKeyFile(path string, key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("%w: key is %d bytes, want %d", ErrKeySource, len(key), KeySize)
	}
	if err := createWhole(path, []byte(hex.EncodeToString(key)+"\n")); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: key file %s: %w", ErrKeySource, path, fs.ErrExist)
		}
		return fmt.Errorf("%w: write key file: %v", ErrKeySource, err)
	}
	return nil
}

// createWhole creates path with mode 0600 holding data, failing with an
// error wrapping fs.ErrExist when path exists. data is written and synced
// to a temporary file in the same directory first, then linked to path,
// so path never exists empty or partly written.
func createWhole(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		return fs.ErrExist
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		// A file system without hard links: create in place, exclusively.
		return createInPlace(path, data)
	}
	if d, err := os.Open(dir); err == nil { // make the new name durable
		d.Sync()
		d.Close()
	}
	return nil
}

// createInPlace is createWhole where the file system cannot link: the file
// is created exclusively and removed again if writing fails.
func createInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrKeySource, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: key file %s has mode %04o, readable by others; chmod 600 it", ErrKeySource, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeySource, err)
	}
	key, err := decodeKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%w: key file %s: %v", ErrKeySource, path, err)
	}
	return key, nil
}

// EnvKey returns a KeySource for a root key given as text (for development,
// from NIGHTSHIFT_VAULT_KEY): hex or base64 (standard or URL, padded or raw)
// of exactly 32 bytes. The caller reads the environment, not this package.
func EnvKey(value string) KeySource { return envKey(value) }

type envKey string

// String and LogValue keep the key out of logs and error messages.
func (k envKey) String() string         { return "EnvKey(REDACTED)" }
func (k envKey) LogValue() slog.Value   { return slog.StringValue(k.String()) }
func (k *passKey) String() string       { return "PassphraseKey(REDACTED, " + k.saltPath + ")" }
func (k *passKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

func (k envKey) RootKey(ctx context.Context) ([]byte, error) {
	key, err := decodeKey(strings.TrimSpace(string(k)))
	if err != nil {
		return nil, fmt.Errorf("%w: NIGHTSHIFT_VAULT_KEY: %v", ErrKeySource, err)
	}
	return key, nil
}

func decodeKey(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return b, nil
		}
	}
	return nil, fmt.Errorf("want hex or base64 of %d bytes", KeySize)
}

// Argon2id parameters for PassphraseKey (RFC 9106's second recommendation).
const (
	argonTime    = 3
	argonMemory  = 64 * 1024 // KiB
	argonThreads = 4
	saltSize     = 16
)

// PassphraseKey returns a KeySource deriving the root key from pass with
// Argon2id. The salt and parameters live in the file at saltPath (not
// secret), created with mode 0600 on first use; keep it with the database.
func PassphraseKey(pass []byte, saltPath string) KeySource {
	return &passKey{pass: append([]byte(nil), pass...), saltPath: saltPath}
}

type passKey struct {
	pass     []byte
	saltPath string
	mu       sync.Mutex
}

func (k *passKey) RootKey(ctx context.Context) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.pass) == 0 {
		return nil, fmt.Errorf("%w: empty passphrase", ErrKeySource)
	}
	p, err := readSalt(k.saltPath)
	if errors.Is(err, fs.ErrNotExist) {
		p = argonParams{time: argonTime, memory: argonMemory, threads: argonThreads, salt: make([]byte, saltSize)}
		if _, err := rand.Read(p.salt); err != nil {
			return nil, fmt.Errorf("%w: generate salt: %v", ErrKeySource, err)
		}
		err = writeSalt(k.saltPath, p)
		if errors.Is(err, fs.ErrExist) {
			p, err = readSalt(k.saltPath)
		}
	}
	if err != nil {
		return nil, err
	}
	return argon2.IDKey(k.pass, p.salt, p.time, p.memory, p.threads, KeySize), nil
}

type argonParams struct {
	time, memory uint32
	threads      uint8
	salt         []byte
}

func (p argonParams) String() string {
	return fmt.Sprintf("argon2id v=19 m=%d t=%d p=%d salt=%s\n", p.memory, p.time, p.threads, base64.RawStdEncoding.EncodeToString(p.salt))
}

func writeSalt(path string, p argonParams) error {
	if err := createWhole(path, []byte(p.String())); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("%w: write salt file: %v", ErrKeySource, err)
	}
	return nil
}

func readSalt(path string) (argonParams, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return argonParams{}, err
		}
		return argonParams{}, fmt.Errorf("%w: %v", ErrKeySource, err)
	}
	bad := func(why string) (argonParams, error) {
		return argonParams{}, fmt.Errorf("%w: salt file %s: %s", ErrKeySource, path, why)
	}
	f := strings.Fields(string(b))
	if len(f) != 6 || f[0] != "argon2id" || f[1] != "v=19" {
		return bad("not an argon2id parameter line")
	}
	var p argonParams
	for _, kv := range f[2:] {
		k, v, _ := strings.Cut(kv, "=")
		var n uint64
		if k != "salt" {
			if n, err = strconv.ParseUint(v, 10, 32); err != nil || n == 0 {
				return bad("bad " + k)
			}
		}
		switch k {
		case "m":
			p.memory = uint32(n)
		case "t":
			p.time = uint32(n)
		case "p":
			if n > 255 {
				return bad("bad p")
			}
			p.threads = uint8(n)
		case "salt":
			if p.salt, err = base64.RawStdEncoding.DecodeString(v); err != nil || len(p.salt) < 8 {
				return bad("bad salt")
			}
		default:
			return bad("unknown field " + k)
		}
	}
	if p.memory == 0 || p.time == 0 || p.threads == 0 || p.salt == nil {
		return bad("missing field")
	}
	return p, nil
}

// KeyChoice names where SelectKeySource found the root key.
type KeyChoice string

// The root key sources, in the order SelectKeySource prefers them.
const (
	KeyFromEnv        KeyChoice = "env"
	KeyFromPassphrase KeyChoice = "passphrase"
	KeyFromFile       KeyChoice = "file"
)

// SelectKeySource picks the root key source the way every nightshift
// command does: envKey (NIGHTSHIFT_VAULT_KEY) when set, else passphrase
// (NIGHTSHIFT_VAULT_PASSPHRASE) with its salt in <dataDir>/vault.salt, else
// the key file keyFile ("" means <dataDir>/vault.key), created on first use.
func SelectKeySource(dataDir, keyFile, envKeyValue, passphrase string, logger *slog.Logger) (KeySource, KeyChoice) {
	if keyFile == "" {
		keyFile = filepath.Join(dataDir, "vault.key")
	}
	switch {
	case envKeyValue != "":
		return EnvKey(envKeyValue), KeyFromEnv
	case passphrase != "":
		return PassphraseKey([]byte(passphrase), filepath.Join(dataDir, "vault.salt")), KeyFromPassphrase
	default:
		return FileKey(keyFile, logger), KeyFromFile
	}
}
