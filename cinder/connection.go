package cinder

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// parseConnection reads the RBD connection info: data.name "pool/volume-<id>", hosts, ports.
func parseConnection(ci map[string]any) (driver.ImageSpec, []string, error) {
	if t, _ := ci["driver_volume_type"].(string); t != "" && t != "rbd" {
		return driver.ImageSpec{}, nil, fmt.Errorf("the volume is on a %q backend; this plugin maps only rbd", t)
	}
	// os-initialize_connection nests the fields under "data"; the attachments API returns them
	// flat, beside driver_volume_type.
	data, ok := ci["data"].(map[string]any)
	if !ok {
		data = ci
	}
	nm, _ := data["name"].(string)
	pool, image, ok := strings.Cut(nm, "/")
	if !ok || pool == "" || image == "" {
		keys := make([]string, 0, len(ci))
		for k := range ci {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return driver.ImageSpec{}, nil, fmt.Errorf("connection info without an rbd pool/image (name %q; fields %v)", nm, keys)
	}
	hosts, _ := data["hosts"].([]any)
	ports, _ := data["ports"].([]any)
	var mons []string
	for i, h := range hosts {
		hs, _ := h.(string)
		port := "6789"
		if i < len(ports) {
			switch pv := ports[i].(type) {
			case string:
				port = pv
			case float64:
				port = strconv.Itoa(int(pv))
			}
		}
		if hs != "" {
			if strings.Contains(hs, ":") && !strings.HasPrefix(hs, "[") {
				hs = "[" + hs + "]"
			}
			mons = append(mons, hs+":"+port)
		}
	}
	return driver.ImageSpec{Pool: pool, Image: image}, mons, nil
}

// ImageOf returns the RBD image an attachment's or os-initialize_connection's connection info
// names, read as Attach reads it (for tools that attach beside the plugin, such as cmd/cdp-bench).
func ImageOf(ci map[string]any) (driver.ImageSpec, error) {
	spec, _, err := parseConnection(ci)
	return spec, err
}
