//go:build !linux

package server

import "errors"

// schedSupported: SCHED_BATCH is Linux's; sched_batch does nothing here.
const schedSupported = false

const policyOther, policyBatch = 0, 3

var errNoSched = errors.New("no SCHED_BATCH on this system")

func gettid() int                    { return 0 }
func threadPolicy(int) (int, error)  { return 0, errNoSched }
func setThreadPolicy(int, int) error { return errNoSched }
func isPerm(error) bool              { return true }
