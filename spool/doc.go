// Package spool delivers accepted messages into Maildirs, durably.
//
// The server resolves recipients to mailboxes (its address book), builds
// the trace fields, and hands each accepted message to Spool.Submit: the
// mailboxes, the trace fields' bytes and the body. A fixed pool of workers
// delivers it and calls back with nil only once the message is durable,
// and only then may the server answer 250. spool knows files, fsync and
// its workers; it knows no addresses, aliases or SMTP, and nothing
// received from the network ever becomes a path: it refuses every
// Mailbox whose names are not safe path elements (Mailbox.Valid), and the
// server gives it only configured ones.
//
// # Durability
//
// A delivery to mailboxes A and B goes (cr.yp.to/proto/maildir.html):
//
//	open(A/tmp/N, O_CREAT|O_EXCL); writev; fsync(file); close
//	link(A/tmp/N, B/tmp/N)              (a copy, fsynced, if link fails)
//	fsync(A/tmp); fsync(B/tmp)
//	rename(A/tmp/N, A/new/N); rename(B/tmp/N, B/new/N)
//	fsync(A/new); fsync(B/new)          -> done(nil), the server says 250
//
// fsync on the file makes its data and size durable; it says nothing about
// any name for it. POSIX makes a directory entry durable only through fsync
// on the directory. fsync(tmp/) makes each tmp name (the created file and
// every hard link) durable before anything is published, so each step
// starts from a state a crash cannot take back; on ext4 (data=ordered) and
// XFS the file's fsync has already committed the journal transaction that
// created it, so this fsync is nearly free. The rename is a later
// transaction, and fsync(new/) is what commits it. Without that last fsync
// a crash could put the message back in tmp/, where start-up removes our
// files, after the client was told 250. Directories made on first use (and,
// once per process, existing ones) are synced into their parents too.
//
// Until the first rename nothing is visible and any failure removes every
// tmp file: all or nothing. A failure after a rename is reported as a
// temporary error though some mailboxes have the message: the client
// retries, and a duplicate beats a loss. ENOSPC and EDQUOT are reported as
// ErrNoSpace. Files are created 0600 and directories 0700. On Linux the
// rename uses RENAME_NOREPLACE, so a name collision can never overwrite
// mail.
//
// The Syncer interface carries both fsyncs, so tests can inject failures
// and check their order; a BatchSyncer (group commit, commit.go) replaces
// them with one syncfs per batch. NoSync turns durability off, for
// benchmarks only.
//
// # Storage format
//
// Files are stored with LF line endings, as Dovecot (mail_save_crlf=no),
// Postfix local and virtual, qmail and procmail store them; the body bytes
// are written as given. The spool prepends the trace fields the server
// built (Return-Path and Received, RFC 5321 4.4), drops any Return-Path
// the client sent, and refuses a message with more than 50 Received fields
// as looping (ErrMailLoop): both need the one scan of the header section a
// worker makes. File names are
// <sec>.M<usec>P<pid>Q<n>_nanomx.<host>,S=<size>, where S= is the exact
// file size, which Dovecot trusts without checking.
//
// One nanomx process should own a Maildir root: at start-up it removes
// every file of its own (marked "_nanomx.") from tmp/, and other files not
// touched for 36 hours.
package spool
