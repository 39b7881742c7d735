package benchkit

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// NewTable is the tab writer every result table uses: columns two spaces
// apart, right-aligned. Cells end in '\t'; Flush prints.
func NewTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
}

// Ms formats d in milliseconds with one decimal.
func Ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

// Sec formats d in seconds with two decimals.
func Sec(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// MetWord is "met" or "not met".
func MetWord(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// FirstLine is s up to its first newline.
func FirstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
