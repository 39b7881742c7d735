package dbbackup

import (
	"os"
	"syscall"
)

// growPipe raises a pipe's buffer to 1 MiB (best effort): pg_dump and
// pg_restore then wake each other up less often.
func growPipe(f *os.File) {
	const fSetPipeSz = 1031 // F_SETPIPE_SZ
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSz, 1<<20)
	})
}
