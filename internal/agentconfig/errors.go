package agentconfig

import (
	"github.com/hashicorp/hcl/v2"

	"github.com/golive/golive/internal/hclerr"
)

// FieldError is one problem with one field of the config (see hclerr).
type FieldError = hclerr.FieldError

// Errors is every problem found in a config, sorted by position; Parse,
// Load and Validate return it (as error) when there is at least one.
type Errors = hclerr.Errors

func fromDiags(field string, diags hcl.Diagnostics) Errors { return hclerr.FromDiags(field, diags) }
