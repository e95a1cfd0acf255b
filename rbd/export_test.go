package rbd

// SetDirPage sets how many names one request of List reads (tests page through a few images),
// and returns what puts it back.
func SetDirPage(n uint64) (restore func()) {
	old := dirPage
	dirPage = n
	return func() { dirPage = old }
}
