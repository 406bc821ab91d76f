package main

import (
	"context"
	"errors"
)

func runServe(ctx context.Context, a *app, args []string) error    { return errors.New("not yet") }
func runInit(ctx context.Context, a *app, args []string) error     { return errors.New("not yet") }
func runDispatch(ctx context.Context, a *app, args []string) error { return errors.New("not yet") }
func runTasks(ctx context.Context, a *app, args []string) error    { return errors.New("not yet") }
func runVersion(ctx context.Context, a *app, args []string) error  { return errors.New("not yet") }
