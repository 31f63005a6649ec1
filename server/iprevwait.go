package server

// The client's name in the Received field comes from iprev, begun at
// connect. MAIL does not wait for it: the transaction goes on while the
// PTR and forward lookups run, and the end of data waits for it with the
// other checks. Only the Received field of a body that spills to disk is
// written before the end of data, so the first spill waits for the name:
// the body stays in memory past spill_threshold, charged to the budget as
// always, until iprev has answered or the body reaches maxSpillHold, and
// then spills with the name known so far ("unknown" if iprev has not
// confirmed one).

// maxSpillHold is the most a body waiting for the client's name holds in
// memory: four spill thresholds.
func (c *conn) maxSpillHold() int64 { return 4 * c.lv.cfg.SpillThreshold }

// holdSpill reports whether a body of n bytes, past the spill threshold,
// stays in memory for now: it has not spilled yet and the client's name is
// not known.
func (c *conn) holdSpill(n int64) bool {
	return c.spill == nil && !c.nameKnown() && n <= c.maxSpillHold()
}

// nameKnown reports whether the client's name for the Received field is
// settled: iprev is off or has answered.
func (c *conn) nameKnown() bool {
	return c.cs == nil || c.cs.info.auth.nameKnown()
}

// nameKnown reports whether iprev is off or has answered.
func (st *authSession) nameKnown() bool {
	return st == nil || st.iprev.known()
}
