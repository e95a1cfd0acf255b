package cinder

// metaFrontEnd records on a Cinder volume the plugin front end that created it
// (driver.FrontEndVolume or driver.FrontEndCSI), so that each front end refuses the other's
// volumes (driver/frontend.go).
const metaFrontEnd = "docker-plugin.front-end"

// recordFrontEnd adds the creating front end to a new volume's metadata ("" records nothing).
func recordFrontEnd(meta map[string]string, frontEnd string) {
	if frontEnd != "" {
		meta[metaFrontEnd] = frontEnd
	}
}
