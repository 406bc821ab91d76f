package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/internal/kvrec"
	"github.com/nightshift/nightshift/vault/natsstore"
)

// Where NewKV keeps the provider's state on a cluster.
const (
	// Bucket holds address claims (addr.<hash>), pool numbers
	// (phone.<hash>) and each identity's lease (lease.<identity id>).
	Bucket = "NIGHTSHIFT_IDENTITY_LOCAL"
	// MessageStream holds every received mail and SMS, one subject per
	// identity: MessageSubjectPrefix + "<identity id>".
	MessageStream        = "NIGHTSHIFT_IDENTITY_MESSAGES"
	MessageSubjectPrefix = "nightshift.identity.messages."
)

// KVConfig says where NewKV keeps its records.
type KVConfig struct {
	// Replicas of the bucket and the stream; 0 means 1. Use nats.replicas.
	Replicas int
	// MaxAge drops messages older than this; zero keeps them 90 days.
	MaxAge time.Duration
}

type kvState struct {
	kv   jetstream.KeyValue
	js   jetstream.JetStream
	msgs jetstream.Stream
	nc   *nats.Conn
}

type kvAddress struct {
	Address    string `json:"address"`
	IdentityID string `json:"identity_id"`
	Live       bool   `json:"live"`
}

type kvPhone struct {
	Number     string `json:"number"`
	IdentityID string `json:"identity_id,omitempty"`
	LeasedAt   int64  `json:"leased_at,omitempty"`
}

type kvMessage struct {
	identity.Message
	IdentityID string `json:"identity_id"`
}

// NewKV returns a local provider whose addresses, phone leases and
// messages live in the replicated bucket Bucket and stream MessageStream:
// mail taken by the SMTP listener or an SMS posted to the ingress on one
// host is read (and wakes a waiting get_otp) on a worker on another host,
// and a number is leased to at most one identity across all of them
// (revision-checked claims). Call Start to listen for mail.
func NewKV(ctx context.Context, js jetstream.JetStream, kc KVConfig, cfg Config) (*Provider, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if js == nil {
		return nil, errors.New("local: NewKV needs a JetStream")
	}
	replicas := max(kc.Replicas, 1)
	if kc.MaxAge <= 0 {
		kc.MaxAge = 90 * 24 * time.Hour
	}
	kv, err := natsstore.LeaderBucket(ctx, js, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, Storage: jetstream.FileStorage,
		Replicas: replicas, Description: "nightshift local identities: addresses and phone leases"})
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	st, err := js.Stream(ctx, MessageStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: MessageStream, Subjects: []string{MessageSubjectPrefix + "*"},
			Storage: jetstream.FileStorage, Replicas: replicas, MaxAge: kc.MaxAge, Duplicates: 2 * time.Minute,
			Description: "nightshift local identities: received mail and SMS"})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, MessageStream)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("local: message stream: %w", err)
	}
	for _, n := range cfg.PhonePool {
		if _, err := kv.Create(ctx, phoneKey(n), mustJSON(kvPhone{Number: n})); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("local: add pool number: %w", err)
		}
	}
	p := &Provider{cfg: cfg, log: cfg.Logger.With("component", "identity_local"), pool: append([]string(nil), cfg.PhonePool...),
		kv: &kvState{kv: kv, js: js, msgs: st, nc: js.Conn()}}
	p.watch.m = make(map[string]*watcher)
	return p, nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func addrKey(addr string) string  { return kvHash("addr", strings.ToLower(addr)) }
func phoneKey(n string) string    { return kvHash("phone", n) }
func leaseKey(id string) string   { return kvHash("lease", id) }
func msgSubject(id string) string { return MessageSubjectPrefix + kvToken(id) }

func kvHash(prefix, s string) string {
	// The keys stay readable for what is already in the key alphabet.
	return prefix + "." + kvToken(s)
}

// kvToken maps s onto one subject token (identity ids are ULIDs and pass
// unchanged; anything else is hex-encoded).
func kvToken(s string) string {
	ok := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	return fmt.Sprintf("x%x", s)
}

func (p *Provider) kvProvision(ctx context.Context, req identity.ProvisionRequest, addr string) (identity.Account, error) {
	k := p.kv
	for {
		var a kvAddress
		rev, err := kvrec.Get(ctx, k.kv, addrKey(addr), &a)
		if err != nil {
			return identity.Account{}, fmt.Errorf("local: claim %s: %w", addr, err)
		}
		if rev != 0 && a.Live && a.IdentityID != req.IdentityID && (req.Displace == "" || a.IdentityID != req.Displace) {
			return identity.Account{}, &identity.AddressTakenError{Address: addr, Owner: a.IdentityID, Err: ErrAddressTaken}
		}
		// Written at the revision read: a claim that changed meanwhile
		// (another identity took it, the displaced one came back) is read
		// and judged again.
		ok, err := kvrec.Write(ctx, k.kv, addrKey(addr), kvAddress{Address: addr, IdentityID: req.IdentityID, Live: true}, rev)
		if err != nil {
			return identity.Account{}, fmt.Errorf("local: claim %s: %w", addr, err)
		}
		if ok {
			break
		}
	}
	if req.Displace != "" && req.Displace != req.IdentityID {
		// The dead identity will never be released: give its number back
		// now so the pool does not shrink by one per killed creator.
		// It may have died before recording its lease: look at the pool.
		if err := p.kvReturnPhones(ctx, req.Displace, p.pool...); err != nil {
			p.kvFreeAddress(context.WithoutCancel(ctx), addr, req.IdentityID)
			return identity.Account{}, err
		}
		p.log.InfoContext(ctx, "address taken over from an identity that was never stored", "address", addr,
			"identity_id", req.IdentityID, "displaced_identity_id", req.Displace)
	}
	phone, err := p.kvLeasePhone(ctx, req.IdentityID)
	if err != nil {
		// Give the address back: the identity is not provisioned.
		p.kvFreeAddress(context.WithoutCancel(ctx), addr, req.IdentityID)
		return identity.Account{}, err
	}
	if phone == "" && len(p.pool) > 0 {
		p.log.WarnContext(ctx, "phone pool exhausted; identity has no phone", "identity_id", req.IdentityID)
	}
	return identity.Account{IdentityID: req.IdentityID, Name: req.Name, Email: addr, Phone: phone, Ref: req.IdentityID}, nil
}

func (p *Provider) kvLeasePhone(ctx context.Context, identityID string) (string, error) {
	k := p.kv
	var have string
	if rev, err := kvrec.Get(ctx, k.kv, leaseKey(identityID), &have); err != nil {
		return "", fmt.Errorf("local: lease phone: %w", err)
	} else if rev != 0 && have != "" {
		var ph kvPhone
		if _, err := kvrec.Get(ctx, k.kv, phoneKey(have), &ph); err == nil && ph.IdentityID == identityID {
			return have, nil
		}
	}
	for _, n := range p.pool {
		for {
			var ph kvPhone
			rev, err := kvrec.Get(ctx, k.kv, phoneKey(n), &ph)
			if err != nil {
				return "", fmt.Errorf("local: lease phone: %w", err)
			}
			if ph.IdentityID != "" && ph.IdentityID != identityID {
				break
			}
			ok, err := kvrec.Write(ctx, k.kv, phoneKey(n), kvPhone{Number: n, IdentityID: identityID, LeasedAt: p.cfg.Clock().UnixMilli()}, rev)
			if err != nil {
				return "", fmt.Errorf("local: lease phone: %w", err)
			}
			if ok {
				if _, err := k.kv.Put(ctx, leaseKey(identityID), mustJSON(n)); err != nil {
					return "", fmt.Errorf("local: lease phone: %w", err)
				}
				return n, nil
			}
		}
	}
	return "", nil
}

func (p *Provider) kvFreeAddress(ctx context.Context, addr, identityID string) error {
	for {
		var a kvAddress
		rev, err := kvrec.Get(ctx, p.kv.kv, addrKey(addr), &a)
		if err != nil {
			return fmt.Errorf("local: release address: %w", err)
		}
		if rev == 0 || !a.Live || a.IdentityID != identityID {
			return nil
		}
		a.Live = false
		if ok, err := kvrec.Write(ctx, p.kv.kv, addrKey(addr), a, rev); ok || err != nil {
			return err
		}
	}
}

func (p *Provider) kvRelease(ctx context.Context, acct identity.Account) error {
	if acct.Email != "" {
		if err := p.kvFreeAddress(ctx, strings.ToLower(acct.Email), acct.IdentityID); err != nil {
			return err
		}
	}
	return p.kvReturnPhones(ctx, acct.IdentityID, acct.Phone)
}

// kvReturnPhones returns the pool numbers leased to identityID (the one its
// lease record names, and any of numbers it holds) and drops its lease
// record.
func (p *Provider) kvReturnPhones(ctx context.Context, identityID string, numbers ...string) error {
	k := p.kv
	var n string
	if _, err := kvrec.Get(ctx, k.kv, leaseKey(identityID), &n); err != nil {
		return fmt.Errorf("local: return phone: %w", err)
	}
	for _, num := range append([]string{n}, numbers...) {
		if num == "" {
			continue
		}
		for {
			var ph kvPhone
			rev, err := kvrec.Get(ctx, k.kv, phoneKey(num), &ph)
			if err != nil {
				return fmt.Errorf("local: return phone: %w", err)
			}
			if rev == 0 || ph.IdentityID != identityID {
				break
			}
			ok, err := kvrec.Write(ctx, k.kv, phoneKey(num), kvPhone{Number: num}, rev)
			if err != nil {
				return fmt.Errorf("local: return phone: %w", err)
			}
			if ok {
				break
			}
		}
	}
	if err := k.kv.Delete(ctx, leaseKey(identityID)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("local: return phone: %w", err)
	}
	return nil
}

func (p *Provider) kvPhoneLeases(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range p.pool {
		var ph kvPhone
		if _, err := kvrec.Get(ctx, p.kv.kv, phoneKey(n), &ph); err != nil {
			return nil, err
		}
		if ph.IdentityID != "" {
			out[n] = ph.IdentityID
		}
	}
	return out, nil
}

func (p *Provider) kvMessages(ctx context.Context, acct identity.Account, q identity.MessageQuery) ([]identity.Message, error) {
	out := []identity.Message{}
	subj := msgSubject(acct.IdentityID)
	info, err := p.kv.msgs.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, fmt.Errorf("local: messages: %w", err)
	}
	want := info.State.Subjects[subj]
	if want == 0 {
		return out, nil
	}
	type seqMsg struct {
		seq uint64
		m   identity.Message
	}
	var all []seqMsg
	// Walk the identity's subject from the leader, one message at a time
	// (no consumer to set up or to time out), up to what was stored when we
	// looked; later arrivals wake a watcher.
	next := info.State.FirstSeq
	for uint64(len(all)) < want {
		m, err := p.kv.msgs.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // aged out meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("local: messages: %w", err)
		}
		var km kvMessage
		if err := json.Unmarshal(m.Data, &km); err != nil {
			return nil, fmt.Errorf("local: decode message: %w", err)
		}
		all = append(all, seqMsg{m.Sequence, km.Message})
		next = m.Sequence + 1
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].m.ReceivedAt.Equal(all[j].m.ReceivedAt) {
			return all[i].m.ReceivedAt.After(all[j].m.ReceivedAt)
		}
		return all[i].seq > all[j].seq
	})
	msgs := make([]identity.Message, len(all))
	for i, x := range all {
		msgs[i] = x.m
	}
	return q.Filter(msgs), nil
}

func (p *Provider) kvStore(ctx context.Context, identityID string, m identity.Message) error {
	data := mustJSON(kvMessage{Message: m, IdentityID: identityID})
	if _, err := p.kv.js.Publish(ctx, msgSubject(identityID), data, jetstream.WithMsgID(m.ID)); err != nil {
		return fmt.Errorf("local: store %s: %w", m.Kind, err)
	}
	return nil
}

func (p *Provider) kvLiveAddress(ctx context.Context, addr string) (string, error) {
	var a kvAddress
	rev, err := kvrec.Get(ctx, p.kv.kv, addrKey(strings.ToLower(addr)), &a)
	if err != nil || rev == 0 || !a.Live {
		return "", err
	}
	return a.IdentityID, nil
}

func (p *Provider) kvLeasedNumber(ctx context.Context, number string) (string, error) {
	if !validPhone(number) {
		return "", nil
	}
	var ph kvPhone
	if _, err := kvrec.Get(ctx, p.kv.kv, phoneKey(number), &ph); err != nil {
		return "", err
	}
	return ph.IdentityID, nil
}

// kvWatch wakes on the identity's next message stored by any host (a
// subscription on its message subject) and on a release in this process.
func (p *Provider) kvWatch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	var fired, stopped sync.Once
	fire := func() { fired.Do(func() { close(ch) }) }
	local, stopLocal := p.watch.add(id)
	sub, err := p.kv.nc.Subscribe(msgSubject(id), func(*nats.Msg) { fire() })
	if err == nil {
		// The subscription is in place on the server before the caller
		// reads the messages stored so far.
		err = p.kv.nc.Flush()
	}
	if err != nil {
		// Wake at once: the caller reads again.
		fire()
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-local:
			fire()
		case <-done:
		}
	}()
	return ch, func() {
		stopped.Do(func() {
			close(done)
			stopLocal()
			if sub != nil {
				sub.Unsubscribe()
			}
		})
	}
}
