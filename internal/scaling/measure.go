package scaling

import (
	"fmt"
	"time"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// Instance states the agent reports (InstanceState.state).
const (
	StateStarting = "starting"
	StateServing  = "serving"
	StateDraining = "draining"
	StateStopping = "stopping"
	StateFailed   = "failed"
)

// Counts are a service's instances on a host as its agent reports them.
type Counts struct {
	// Current is the count the agent converges to (desired_instances, or
	// the instances it reports).
	Current int
	// Serving are the instances healthy and in the router.
	Serving int
	// Converging says why the agent is not settled ("" when it is).
	Converging string
}

// CountsOf reads sv's instances.
func CountsOf(sv *golivev1.ServiceState) Counts {
	var c Counts
	moving := 0
	for _, in := range sv.GetInstances() {
		switch in.State {
		case StateServing:
			c.Serving++
		case StateStarting, StateDraining, StateStopping:
			moving++
		}
	}
	c.Current = int(sv.GetDesiredInstances())
	if c.Current == 0 {
		c.Current = len(sv.GetInstances())
	}
	if c.Current == 0 {
		c.Current = 1 // an unscaled service runs one
	}
	switch {
	case moving > 0:
		c.Converging = fmt.Sprintf("the agent is converging to %d instances (%d serving, %d starting or draining)", c.Current, c.Serving, moving)
	case c.Serving != c.Current && len(sv.GetInstances()) > 0:
		c.Converging = fmt.Sprintf("%d of %d instances serving", c.Serving, c.Current)
	}
	return c
}

// RPSDemand is the real traffic of the service's serving slot: its
// requests over the window, per second. Missing without load balancer
// figures, when their read failed, or when older than maxAge.
func RPSDemand(sv *golivev1.ServiceState, now time.Time, maxAge time.Duration) Demand {
	tw := sv.GetTraffic()
	switch {
	case tw == nil || tw.Source == "":
		return Demand{Missing: "no load balancer figures for " + sv.GetName()}
	case tw.Error != "":
		return Demand{Missing: "the " + tw.Source + " figures failed: " + tw.Error}
	case tw.ObservedAt == nil:
		return Demand{Missing: "the " + tw.Source + " figures have no time"}
	case now.Sub(tw.ObservedAt.AsTime()) > maxAge:
		return Demand{Missing: fmt.Sprintf("the %s figures are stale (read %s ago, older than %s)", tw.Source,
			now.Sub(tw.ObservedAt.AsTime()).Round(time.Second), maxAge)}
	}
	for _, sl := range tw.Slots {
		if sl.Slot != sv.GetActiveSlot() {
			continue
		}
		if !(sl.WindowSeconds > 0) {
			return Demand{Missing: "the serving slot's traffic window is empty"}
		}
		return Demand{Total: float64(sl.Requests) / sl.WindowSeconds}
	}
	return Demand{Missing: fmt.Sprintf("no %s figures for the serving slot %q", tw.Source, sv.GetActiveSlot())}
}

// CPUDemand is the serving instances' CPU use, in cores: the mean of
// those that report it, times the serving count. Missing when the
// heartbeat is older than maxAge or no serving instance reports its CPU.
func CPUDemand(sv *golivev1.ServiceState, heartbeat, now time.Time, maxAge time.Duration) Demand {
	if heartbeat.IsZero() || now.Sub(heartbeat) > maxAge {
		return Demand{Missing: "no fresh heartbeat with the instances' CPU"}
	}
	serving, known := 0, 0
	sum := 0.0
	for _, in := range sv.GetInstances() {
		if in.State != StateServing {
			continue
		}
		serving++
		if in.CpuCores > 0 {
			known++
			sum += in.CpuCores
		}
	}
	if known == 0 {
		return Demand{Missing: "no serving instance reports its CPU"}
	}
	return Demand{Total: sum / float64(known) * float64(serving)}
}
