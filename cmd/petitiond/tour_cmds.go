package main

import (
	"context"
	"io"
)

func runDKIMKeygen(context.Context, []string, io.Writer, io.Writer) error { return errNotYet }
func runDemo(context.Context, []string, io.Writer, io.Writer) error      { return errNotYet }
