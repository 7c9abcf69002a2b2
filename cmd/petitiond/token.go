package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/relay/admin"
)

// adminTokenEnv overrides admin.token, for the daemon and the admin commands.
const adminTokenEnv = "PETITIOND_ADMIN_TOKEN"

// adminTokenHelp says where the admin commands find the token.
const adminTokenHelp = "The token comes from " + adminTokenEnv + ", else admin.token in the config, else the file " +
	admin.TokenFileName + " in store.dir (made by the daemon at first start)."

// findAdminToken is the token an admin command sends, as SPEC 2 orders:
// PETITIOND_ADMIN_TOKEN, else admin.token, else <store.dir>/admin.token.
// cfg may be nil when the environment has one. No token at all is "",
// and the daemon's 401 says what to set; a token file that exists but
// cannot be read (another user's, say) is an error that says so.
func findAdminToken(cfg *config.Config) (string, error) {
	if t := os.Getenv(adminTokenEnv); t != "" {
		return t, nil
	}
	if cfg == nil {
		return "", nil
	}
	if cfg.Admin.Token != "" {
		return cfg.Admin.Token, nil
	}
	t, err := admin.ReadTokenFile(cfg.Store.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w (run the command as the daemon's user, or set %s)", err, adminTokenEnv)
	}
	return t, nil
}
