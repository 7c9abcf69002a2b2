package main

import (
	"context"
	"errors"
	"io"
)

var errNotYet = errors.New("not available in this build yet")

func runTail(context.Context, []string, io.Writer, io.Writer) error    { return errNotYet }
func runStats(context.Context, []string, io.Writer, io.Writer) error   { return errNotYet }
func runBatches(context.Context, []string, io.Writer, io.Writer) error { return errNotYet }
func runHeld(context.Context, []string, io.Writer, io.Writer) error    { return errNotYet }
