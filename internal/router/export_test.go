package router

// HideNginxWorkers makes the nginx router see no worker processes, as when
// nginx runs in another PID namespace, until the returned func is called.
func HideNginxWorkers() (restore func()) {
	listNginxWorkers = func() map[int]nginxWorker { return map[int]nginxWorker{} }
	return func() { listNginxWorkers = nginxWorkers }
}
