//go:build !linux

package server

// keepAliveInherited: not relied on beyond Linux (keepalive.go); OnOpen
// sets keep-alive on each connection.
const keepAliveInherited = false
