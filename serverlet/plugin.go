package serverlet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"plugin"
	"strings"
)

// PluginSymbol is the constructor a plugin exports:
//
//	func New(args serverlet.Args) (serverlet.Serverlet, error)
const PluginSymbol = "New"

// ErrPlugin wraps every plugin loading error.
var ErrPlugin = errors.New("serverlet plugin")

// LoadPlugin opens a Go plugin (built with `go build -buildmode=plugin`)
// and registers its New constructor. name is a plugin name ("gray": the
// file dir/gray.so, registered as "gray") or a file ending in ".so"
// (registered under its base name without ".so"). It refuses, with an
// error saying why, a missing file, a plugin built with another Go
// toolchain, other build flags (-race) or other versions of this module's
// packages, and a plugin without a New of the right type.
func (r *Registry) LoadPlugin(dir, name string) error {
	file := name
	if !strings.HasSuffix(file, ".so") {
		file += ".so"
	}
	if !filepath.IsAbs(file) && dir != "" {
		file = filepath.Join(dir, file)
	}
	regName := strings.TrimSuffix(filepath.Base(file), ".so")
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("%w %s: %w", ErrPlugin, regName, err)
	}
	p, err := plugin.Open(file)
	if err != nil && strings.Contains(err.Error(), "already loaded") {
		return fmt.Errorf("%w %s: open %s: %w (another build of this plugin is loaded in this process already, "+
			"and Go cannot unload plugins: restart the node to load a new build)", ErrPlugin, regName, file, err)
	}
	if err != nil {
		return fmt.Errorf("%w %s: open %s: %w (a plugin must be built with the same Go toolchain, the same flags "+
			"(-race, -trimpath, tags) and the same versions of github.com/gradient-cdn/gradient and its dependencies as the node: "+
			"go build -buildmode=plugin in this module's checkout)", ErrPlugin, regName, file, err)
	}
	sym, err := p.Lookup(PluginSymbol)
	if err != nil {
		return fmt.Errorf("%w %s: %s does not export %s: %w (want func %s(serverlet.Args) (serverlet.Serverlet, error))",
			ErrPlugin, regName, file, PluginSymbol, err, PluginSymbol)
	}
	var c Constructor
	switch f := sym.(type) {
	case func(Args) (Serverlet, error):
		c = f
	case *func(Args) (Serverlet, error):
		c = *f
	case Constructor:
		c = f
	case *Constructor:
		c = *f
	default:
		return fmt.Errorf("%w %s: %s in %s is a %T, want func(serverlet.Args) (serverlet.Serverlet, error)",
			ErrPlugin, regName, PluginSymbol, file, sym)
	}
	if c == nil {
		return fmt.Errorf("%w %s: %s in %s is nil", ErrPlugin, regName, PluginSymbol, file)
	}
	if err := r.Register(regName, c); err != nil {
		return fmt.Errorf("%w %s: %w", ErrPlugin, regName, err)
	}
	return nil
}
