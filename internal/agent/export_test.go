package agent

// CloseServices is closeServices, for the external tests.
var CloseServices = closeServices
