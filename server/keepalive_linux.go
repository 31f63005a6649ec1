package server

// keepAliveInherited: Linux copies a listener's keep-alive settings to the
// sockets it accepts (keepalive.go).
const keepAliveInherited = true
