// Package controltest holds the test helpers shared by the tests of
// package control and of package distributed, which runs jobs through it.
// It is for tests only.
//
// Trainers: Works and Consume are the loop a trainer runs against a
// control.Agent, Consume handing out each Work in chunks of ChunkRows
// rows; TrainLoop records every row a rank consumed in a RowLog and can
// stop early, as a killed process would.
//
// Fake processes: a test binary doubles as the processes its tests start.
// Its TestMain calls Main, which runs the Role named by EnvRole instead of
// the tests; Command builds the command that re-executes the binary as a
// role. A role's Process writes files to a directory the test reads back:
// OpenRowLog and LogChunk keep a task's "<task>.rows" log, which CountRows
// and CoveredRows read; ReadInt reads a number a role wrote. PIDLog
// records the processes a Supervisor started and checks that none
// outlived it (Alive); WaitFor polls a condition.
//
// # Ownership
//
// Command's caller owns the command and the process it starts. The file
// OpenRowLog returns is the caller's to close. A RowLog belongs to the
// test that made it.
//
// # Concurrency
//
// RowLog and PIDLog are safe for concurrent use; read RowLog.Seen only
// after every loop writing to it has returned. WaitFor may be called from
// any goroutine: it reports a timeout with t.Errorf, never t.Fatal. A
// fake process's Expired fires Lifetime after it started, and every role
// that waits also waits for it, so a broken test cannot leave processes
// behind for long.
//
// # Errors
//
// Works, Consume and TrainLoop return nil once the coordinator stopped
// the task, and otherwise the first error of the Agent or of the caller's
// function as it is; TrainLoop returns ErrKilled when it stopped early. The readers of files (ReadInt, CountRows) return -1 or 0
// for files not written yet; CoveredRows and PIDLog.RequireAllGone fail
// the test. Main exits with the role's status, 2 for an unknown role.
package controltest
