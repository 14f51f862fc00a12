package main

import (
	"context"
	"errors"
	"io"
)

// compare runs stepupd and bare fosite side by side (see compareUsage).
func compare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("stepupd compare: not built yet")
}

// baseline serves bare fosite, the comparison's other side.
func baseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("stepupd baseline: not built yet")
}
