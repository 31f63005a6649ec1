package server

import (
	"errors"

	"golang.org/x/sys/unix"
)

// schedSupported: Linux has SCHED_BATCH.
const schedSupported = true

const (
	policyOther = unix.SCHED_NORMAL
	policyBatch = unix.SCHED_BATCH
)

func gettid() int { return unix.Gettid() }

// threadPolicy is the scheduling policy of thread tid (0: the caller).
func threadPolicy(tid int) (int, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, err
	}
	return int(a.Policy), nil
}

// setThreadPolicy gives thread tid (0: the caller) the policy p, keeping
// its nice value (sched_setattr sets both).
func setThreadPolicy(tid, p int) error {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return err
	}
	a.Size = unix.SizeofSchedAttr
	a.Policy = uint32(p)
	a.Flags = 0
	return unix.SchedSetAttr(tid, a, 0)
}

func isPerm(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EACCES)
}
