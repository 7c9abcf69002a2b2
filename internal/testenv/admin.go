package testenv

import "github.com/petitiond/petitiond/relay/admin"

// AdminToken is the admin token the running daemon takes: admin.token, or
// the one it made at first start in <store.dir>/admin.token.
func (e *Env) AdminToken() (string, error) {
	if e.Options.AdminToken != "" {
		return e.Options.AdminToken, nil
	}
	if e.Config.Admin.Token != "" {
		return e.Config.Admin.Token, nil
	}
	return admin.ReadTokenFile(e.Config.Store.Dir)
}

// AdminToken is Env.AdminToken, failing the test when there is none.
func (e *Test) AdminToken() string {
	e.t.Helper()
	tok, err := e.Env.AdminToken()
	if err != nil {
		e.t.Fatalf("admin token: %v", err)
	}
	return tok
}
