// Command rollouts-plugin-trafficrouter-weir is the Argo Rollouts traffic-router plugin for weir: the controller
// starts it as a subprocess and speaks Argo's plugin RPC to it over go-plugin (README, "Argo Rollouts").
package main

import (
	"fmt"
	"os"

	rolloutsrpc "github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/rpc"
	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"weir/integrations/argo-rollouts/plugin"
)

// The handshake the Argo Rollouts controller expects from a traffic-router plugin.
var handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "ARGO_ROLLOUTS_RPC_PLUGIN",
	MagicCookieValue: "trafficrouter",
}

var version = "0.1.0"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-V", "--version":
			fmt.Println("rollouts-plugin-trafficrouter-weir", version)
			return
		case "-h", "--help":
			fmt.Println("usage: rollouts-plugin-trafficrouter-weir\n" +
				"An Argo Rollouts traffic-router plugin: the controller starts it (argo-rollouts-config, name weir/weir).")
			return
		}
	}
	// go-plugin keeps stdout for its handshake; logs go to stderr as hclog JSON, which the controller's go-plugin
	// client relays into its own log at each line's level.
	logger := hclog.New(&hclog.LoggerOptions{Name: "weir", Level: hclog.Info, JSONFormat: true, Output: os.Stderr})
	impl := plugin.New(logger)
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins: map[string]goplugin.Plugin{
			"RpcTrafficRouterPlugin": &rolloutsrpc.RpcTrafficRouterPlugin{Impl: impl},
		},
	})
}
