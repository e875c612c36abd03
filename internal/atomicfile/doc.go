// Package atomicfile publishes files and directories whole: a reader sees
// the old content or the new one, never a mix, and a crash leaves one of
// the two. Every file and directory gotflow writes for a user goes
// through it, so all of them get the same treatment: written beside the
// target (same filesystem), files mode 0644 and directories 0755 (FileMode,
// DirMode), fsynced, renamed over the target, and the parent directory
// fsynced.
//
// A file: WriteFile, Write, or Create then File.Commit or File.Abort.
// A directory: CreateDir, fill Dir.Path with plain writes, then Dir.Commit
// (replace whatever is at the path), Dir.CommitNoReplace (keep an existing
// non-empty directory) or Dir.Abort.
//
// # Ownership
//
// A File or Dir owns its temporary file or staging directory, named
// ".<name>.*.tmp" beside the target, until Commit or Abort, which remove
// it on every path; only a crash leaves one behind. Abort is idempotent
// and a no-op after Commit, so `defer x.Abort()` right after Create or
// CreateDir is the rule. A directory replaced by Dir.Commit is removed
// after the new one is in place.
//
// # Concurrency
//
// A File or Dir is used by one goroutine. Any number of them may target
// the same path at once, in this process or others: each commit is a
// rename, the last one wins, and a reader never sees a mixed directory.
// On Linux a directory replaces another in one atomic exchange
// (renameat2); elsewhere, or on a filesystem without it, the old one is
// moved aside first, so the path is briefly absent.
//
// # Errors
//
// Errors name the target path ("write <path>: …", "publish <path>: …").
// An error before the rename leaves the target as it was; an error after
// it (syncing the parent, removing a replaced directory) is reported but
// the target already holds the new content. Dir.CommitNoReplace refused by
// an existing directory returns an error wrapping fs.ErrExist.
package atomicfile
