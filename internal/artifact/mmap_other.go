//go:build !unix

package artifact

import (
	"fmt"
	"os"
)

// mapFile reads the whole file: platforms without mmap pay in memory.
func mapFile(path string) (data []byte, release func(), err error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w", path, errNotRegular)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return data, func() {}, nil
}
