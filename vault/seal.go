package vault

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"golang.org/x/crypto/chacha20poly1305"
)

// sealVersion1 marks XChaCha20-Poly1305 with a 24-byte random nonce.
const sealVersion1 byte = 1

var errOpen = errors.New("authentication failed")

// seal encrypts plaintext under key with ad bound in: version || nonce || ct.
func seal(rnd io.Reader, key, plaintext, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out[0] = sealVersion1
	if _, err := io.ReadFull(rnd, out[1:]); err != nil {
		return nil, fmt.Errorf("vault: read random nonce: %w", err)
	}
	return aead.Seal(out, out[1:], plaintext, ad), nil
}

// unseal reverses seal; any change to blob, key or ad yields errOpen.
func unseal(key, blob, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	if len(blob) < 1+aead.NonceSize()+aead.Overhead() || blob[0] != sealVersion1 {
		return nil, errOpen
	}
	pt, err := aead.Open(nil, blob[1:1+aead.NonceSize()], blob[1+aead.NonceSize():], ad)
	if err != nil {
		return nil, errOpen
	}
	return pt, nil
}

// Associated data for each kind of sealed blob: a label and the record's
// identity, length-prefixed so no two identities encode alike.
func adFor(label string, parts ...string) []byte {
	b := []byte("nightshift/vault/" + label)
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}

func adRootCheck() []byte   { return adFor("root-check") }
func adAuditKey() []byte    { return adFor("audit-key") }
func adKEK(id int64) []byte { return adFor("kek", strconv.FormatInt(id, 10)) }
func adValue(name, scope string, version int) []byte {
	return adFor("value", name, scope, strconv.Itoa(version))
}
func adDEK(name, scope string, version int, kekID int64) []byte {
	return adFor("dek", name, scope, strconv.Itoa(version), strconv.FormatInt(kekID, 10))
}

// rootCheckPlain is sealed under the root key to recognise it on Open.
var rootCheckPlain = []byte("nightshift vault root key v1")

func macChain(key, prev []byte, fields ...string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(prev)
	for _, f := range fields {
		m.Write(binary.AppendUvarint(nil, uint64(len(f))))
		m.Write([]byte(f))
	}
	return m.Sum(nil)
}
