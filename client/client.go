// Package client is the one typed client of a node's own API,
// /appliance/v1: the CLI, the drill and the Geo peers use it. It holds the
// wire types of that API and links nothing of the embedded server.
//
// Every call has a deadline: the http.Client's Timeout (DefaultTimeout
// unless told otherwise) and the context's, whichever comes first.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout is how long a node has to answer one call.
const DefaultTimeout = time.Minute

// DefaultMaxAnswer is how much of an answer a call reads at most.
const DefaultMaxAnswer = 1 << 20

// Prefix is where the appliance's own API is served.
const Prefix = "/appliance/v1/"

// Options say how a Client reaches its node.
type Options struct {
	// TLS is the TLS configuration (RootCAs: the CA to trust); nil is
	// the system's roots, TLS 1.2 at least.
	TLS *tls.Config
	// Timeout bounds each call; 0 is DefaultTimeout.
	Timeout time.Duration
	// HTTPClient, when set, is used as it is (its Transport, its
	// Timeout): TLS and Timeout are then ignored. A caller that must dial
	// afresh every time, or share connections, brings its own.
	HTTPClient *http.Client
	// MaxAnswer bounds the answer read; 0 is DefaultMaxAnswer.
	MaxAnswer int64
}

// Client talks to one node. It is safe for concurrent use.
type Client struct {
	addr      string
	http      *http.Client
	maxAnswer int64
}

// New is a client of the node whose API is at addr (https://host:port).
func New(addr string, o Options) *Client {
	h := o.HTTPClient
	if h == nil {
		tc := o.TLS
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		timeout := o.Timeout
		if timeout == 0 {
			timeout = DefaultTimeout
		}
		h = &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil}}
	}
	limit := o.MaxAnswer
	if limit == 0 {
		limit = DefaultMaxAnswer
	}
	return &Client{addr: strings.TrimRight(addr, "/"), http: h, maxAnswer: limit}
}

// With is a client of the node at addr, with the same transport, that
// waits at most d (or this client's own deadline, if shorter) for each
// answer.
func (c *Client) With(addr string, d time.Duration) *Client {
	h := *c.http
	if h.Timeout == 0 || d < h.Timeout {
		h.Timeout = d
	}
	return &Client{addr: strings.TrimRight(addr, "/"), http: &h, maxAnswer: c.maxAnswer}
}

// Addr is the node's API address.
func (c *Client) Addr() string { return c.addr }

// HTTPClient is the http.Client the calls go through, for requests that
// are not JSON calls (a snapshot's stream).
func (c *Client) HTTPClient() *http.Client { return c.http }

// Error is a node's error answer: its HTTP status and the messages of
// its {"errors": [...]} body.
type Error struct {
	StatusCode int
	Messages   []string
}

func (e *Error) Error() string { return strings.Join(e.Messages, "; ") }

// UnreachableError is a call no appliance answered: the node did not
// answer in time, could not be reached, or something else answered.
type UnreachableError struct {
	Addr string
	msg  string
	err  error
}

func (e *UnreachableError) Error() string { return e.msg }
func (e *UnreachableError) Unwrap() error { return e.err }

// AddressError is an address no request can be made for.
type AddressError struct {
	Addr string
	Err  error
}

func (e *AddressError) Error() string { return fmt.Sprintf("--address %q: %v", e.Addr, e.Err) }
func (e *AddressError) Unwrap() error { return e.Err }

// Call sends a request and decodes a JSON answer into out (if not nil).
// A path without a leading slash is under /appliance/v1/; one with it is
// any path of the node's API (OpenBao's /v1/ too, whose errors read the
// same). An error answer becomes an *Error (out is decoded from it too:
// an unseal's refusal still carries its progress); no answer from an
// appliance becomes an *UnreachableError.
func (c *Client) Call(ctx context.Context, method, path string, in, out any, token string) error {
	if !strings.HasPrefix(path, "/") {
		path = Prefix + path
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.addr+path, body)
	if err != nil {
		return &AddressError{Addr: c.addr, Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	wait := c.http.Timeout // the call's deadline: the client's or the context's, the sooner
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl).Round(time.Millisecond); wait == 0 || left < wait {
			wait = left
		}
	}
	resp, err := c.http.Do(req)
	var ue *url.Error
	if err != nil && errors.As(err, &ue) && ue.Timeout() {
		return &UnreachableError{Addr: c.addr, err: err, msg: fmt.Sprintf("the node at %s did not answer within %s: it may be paused, overloaded or cut off; ask another node, or give it longer with --timeout", c.addr, wait)}
	}
	if err != nil {
		return &UnreachableError{Addr: c.addr, err: err, msg: fmt.Sprintf("no appliance answered at %s: %v; check --address (or GITLAB_SECRETS_APPLIANCE_ADDR) and that the node runs", c.addr, err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxAnswer))
	if err != nil {
		return &UnreachableError{Addr: c.addr, err: err, msg: fmt.Sprintf("reading the answer from %s: %v", c.addr, err)}
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		var e struct {
			Errors []string `json:"errors"`
		}
		if json.Unmarshal(raw, &e) == nil && len(e.Errors) > 0 {
			if out != nil {
				json.Unmarshal(raw, out)
			}
			return &Error{StatusCode: resp.StatusCode, Messages: e.Errors}
		}
		return &UnreachableError{Addr: c.addr, msg: fmt.Sprintf("%s answered %s, not as an appliance would: check --address", c.addr, resp.Status)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("unexpected answer from %s: %w", c.addr, err)
		}
	}
	return nil
}

// Status is the node's status (GET /appliance/v1/status, no token).
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.Call(ctx, http.MethodGet, "status", nil, &st, "")
	return st, err
}

// GeoPeer is what the node tells the active node's Geo reconciler
// (GET /appliance/v1/geo/peer).
func (c *Client) GeoPeer(ctx context.Context) (PeerStatus, error) {
	var ps PeerStatus
	err := c.Call(ctx, http.MethodGet, "geo/peer", nil, &ps, "")
	return ps, err
}

// Init initializes a new cluster on the node: the answer holds the
// one-time shares and root token.
func (c *Client) Init(ctx context.Context, req InitRequest) (InitResult, error) {
	var res InitResult
	err := c.Call(ctx, http.MethodPost, "init", req, &res, "")
	return res, err
}

// Unseal submits one share; a refused share's answer still says where
// the attempt stands.
func (c *Client) Unseal(ctx context.Context, share string) (UnsealProgress, error) {
	var p UnsealProgress
	err := c.Call(ctx, http.MethodPost, "unseal", map[string]string{"share": share}, &p, "")
	return p, err
}

// Promote asks the active node for a planned switchover (or its dry
// run); a refusal's answer still carries the pre-flight checks.
func (c *Client) Promote(ctx context.Context, req PromoteRequest, token string) (PromoteResult, error) {
	var res PromoteResult
	err := c.Call(ctx, http.MethodPost, "geo/promote", req, &res, token)
	return res, err
}

// Restart asks the node to restart (its supervisor starts it again).
func (c *Client) Restart(ctx context.Context, req RestartRequest, token string) (RestartResponse, error) {
	var res RestartResponse
	err := c.Call(ctx, http.MethodPost, "restart", req, &res, token)
	return res, err
}
