package server

import "testing"

// TestSynRecv counts the handshakes under way to a port in the kernel's
// tables as Linux prints them (IPv4 and IPv6 rows; a listener, an
// established connection and another port's handshake do not count).
func TestSynRecv(t *testing.T) {
	const v4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:09C4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1495 1 0000000000000000 100 0 0 10 0
   1: 0100007F:09C4 0500007F:D431 03 00000000:00000000 01:000000C8 00000000     0        0 0 1 0000000000000000
   2: 0B00000A:09C4 0600007F:D432 03 00000000:00000000 01:000000C8 00000001     0        0 0 1 0000000000000000
   3: 0100007F:09C4 0500007F:D433 01 00000000:00000000 00:00000000 00000000     0        0 1496 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:09C5 0500007F:D434 03 00000000:00000000 01:000000C8 00000000     0        0 0 1 0000000000000000`
	if n := synRecv([]byte(v4), 0x09C4); n != 2 {
		t.Errorf("IPv4 table: %d handshakes to port 2500, want 2", n)
	}
	const v6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:09C4 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1497 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:09C4 00000000000000000000000001000000:D435 03 00000000:00000000 01:000000C8 00000000     0        0 0 1 0000000000000000
`
	if n := synRecv([]byte(v6), 0x09C4); n != 1 {
		t.Errorf("IPv6 table: %d handshakes to port 2500, want 1", n)
	}
	if n := synRecv(nil, 25); n != 0 {
		t.Errorf("empty table: %d", n)
	}
}
